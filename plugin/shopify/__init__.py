"""Everything that speaks Shopify: the Admin GraphQL client and documents, webhook payloads and their
verification, tokens, the history backfill and the reconciliation."""
