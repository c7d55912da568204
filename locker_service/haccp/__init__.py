"""HACCP records: a site's food-safety record of each day, sealed once the day is over,
append-only and hash-chained day to day; exported as CSV and PDF, verified by
`lockerctl haccp verify`."""
