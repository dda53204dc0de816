import CHiredis

// Placeholder until the RedisClient module lands.
enum RedisClientModule { static let version = HIREDIS_MAJOR }
