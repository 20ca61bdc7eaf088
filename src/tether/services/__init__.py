"""Operations of the management plane, shared by the API, the CLI and the controllers.

Each operation runs in one store transaction: it validates everything first, then
writes, so a refused request changes nothing.
"""
