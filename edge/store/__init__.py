"""The database: schema and migrations, engines, the store, samples and reviews."""
