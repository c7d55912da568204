"""Orders: merchants create them, couriers drop them off, purchasers pick them up."""
