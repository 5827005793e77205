check "10% off 20.00" "18.00" "$(cart_discount 10 20.00)"
check "no discount" "20.00" "$(cart_discount 0 20.00)"
