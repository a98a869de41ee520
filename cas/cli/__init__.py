"""The ``cas`` command line: parses, calls the library, prints."""
