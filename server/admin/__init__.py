"""The dashboard's server side: sign-in, live settings, key management, statistics, the audit trail."""
