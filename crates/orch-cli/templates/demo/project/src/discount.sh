# cart_discount PCT TOTAL: prints TOTAL after a PCT percent discount, two decimals.
cart_discount() {
    awk -v pct="$1" -v total="$2" 'BEGIN { printf "%.2f\n", total * (100 - pct) / 100 }'
}
