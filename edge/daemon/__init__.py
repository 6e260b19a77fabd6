"""The long-running service: inbox watching, start-up checks, retention, the camera."""
