"""What operators see: notifications, stream lag, alerts and metrics."""
