# cart_total: reads "name price quantity" lines on stdin and prints the sum of
# price * quantity with two decimals.
cart_total() {
    awk '{ sum += $2 * $3 } END { printf "%.2f\n", sum }'
}
