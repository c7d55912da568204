"""Sites and their kiosks: creation with compartments (admin), lookups."""
