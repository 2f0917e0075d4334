"""Operations: what /metrics, /admin and the admin commands read and do."""
