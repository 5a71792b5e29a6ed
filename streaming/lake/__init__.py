"""The lake contract: layout (`layout`), hour keys (`hours`), landing-file footers (`footer`), the
landed schema (`schema`), atomic writes and asset partitions (`files`), and reading landed rows by
hour (`landing`). Everything that touches the lake's files goes through this package."""

from streaming.lake.files import write_atomically
from streaming.lake.layout import Lake, LandedFile
from streaming.lake.schema import LANDED_SCHEMA

__all__ = ["LANDED_SCHEMA", "Lake", "LandedFile", "write_atomically"]
