"""lorefd: face forgery detection by learning local reconstruction errors.

Layers import one way: ``data`` -> ``models`` -> ``engines`` -> ``evaluation`` -> ``cli``.
"""

__version__ = "0.1.0"
