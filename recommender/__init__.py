"""Pure domain logic (interest profiles, ranking, catalog) and the vector store."""
