"""Intake: customer tag profiles, the matching engine, and (next) contact-event services and lead import."""
