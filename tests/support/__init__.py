"""Helpers the tests share: factories, servers, polling. Test modules import from here only."""
