"""HTTP plumbing shared by every domain: dependencies, errors."""
