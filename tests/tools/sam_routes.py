"""The routes `sam local start-api` would serve, found by SAM CLI's own route
discovery (no Docker needed): one JSON object per line with the method, the
path, the function's logical id and the authorizer SAM CLI links, for the
template and AuthMode given.

Usage: python sam_routes.py <template.yaml> <AuthMode>
Exits non-zero, with SAM CLI's error, when discovery fails.
"""

import json
import sys

from samcli.lib.providers.api_provider import ApiProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider


def main() -> None:
    template, mode = sys.argv[1], sys.argv[2]
    stacks, _ = SamLocalStackProvider.get_stacks(template, parameter_overrides={"AuthMode": mode})
    for route in ApiProvider(stacks).routes:
        for method in route.methods:
            # SAM CLI adds OPTIONS to every path for CORS preflights.
            if method == "OPTIONS":
                continue
            print(
                json.dumps(
                    {
                        "method": method,
                        "path": route.path,
                        "function": route.function_name,
                        "authorizer": route.authorizer_name,
                    }
                )
            )


if __name__ == "__main__":
    main()
