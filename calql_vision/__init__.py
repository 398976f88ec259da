"""calql_vision: offline-to-online Cal-QL for robots that see."""
