"""The audit of door openings: who opened which door, how, why and when, for operators."""
