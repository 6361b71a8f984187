"""Operations: health, metrics, the systemd watchdog, loop lag, backup, logs and exports."""
