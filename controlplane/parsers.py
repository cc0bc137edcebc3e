"""The REST API's JSON parser, with the nesting bound every tenant body obeys (``MAX_JSON_DEPTH``)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from controlplane.contracts.jsonlimits import MAX_JSON_DEPTH, depth_exceeds

TOO_DEEP = f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None
        if depth_exceeds(data):
            raise ParseError(TOO_DEEP)
        return data
