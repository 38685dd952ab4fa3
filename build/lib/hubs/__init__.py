"""Conduit RT hubs: the SignalR hub protocol for Django Channels, hub base classes and the send facade."""
