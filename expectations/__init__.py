"""Great Expectations checks of the landing files and the warehouse marts (docs/contracts.md)."""

from expectations.runner import DataQualityError, MissingInputError, check_landing, check_marts

__all__ = ["DataQualityError", "MissingInputError", "check_landing", "check_marts"]
