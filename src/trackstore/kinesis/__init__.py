"""Kinesis adapters: the client, stream setup and (next) the stream source and producer."""
