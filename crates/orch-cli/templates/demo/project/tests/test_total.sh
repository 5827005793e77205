check "total of two lines" "7.00" "$(printf 'apple 1.50 2\npear 2.00 2\n' | cart_total)"
check "an empty cart costs nothing" "0.00" "$(printf '' | cart_total)"
