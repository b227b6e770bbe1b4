"""Code the tests share: import it from here (``from tests.helpers.x import y``), never from a conftest."""
