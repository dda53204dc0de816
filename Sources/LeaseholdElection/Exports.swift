// The election's public API is spelled in RedisClient's types (endpoints, configurations,
// connections), so importing the election alone is enough to use it.
@_exported import RedisClient
