"""The native stack: every component a real process under supervisord (`make up|down|status|logs`)."""
