"""The HTTP layer: routes, schemas and dependencies. Routes talk to the registry and its batchers only."""
