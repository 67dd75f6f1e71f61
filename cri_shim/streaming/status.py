"""The result of a remote command, as the kubelet's streaming library reports it.

v4 and v5 clients read a JSON Status object (apimachinery's metav1.Status) from the error
stream: Success, or Failure with reason NonZeroExitCode and the exit code as the message of
an ExitCode cause, or an InternalError. Older protocols get the Failure's message as text,
and nothing on success.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None = 0  # None: the command could not be run (see error)
    error: str = ""
    command: tuple[str, ...] = ()

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not self.error

    def message(self) -> str:
        if self.error:
            return f"Internal error occurred: error executing command in container: {self.error}"
        if self.exit_code:
            return (f"command terminated with non-zero exit code: error executing command "
                    f"{list(self.command)}, exit code {self.exit_code}")
        return ""

    def status_json(self) -> bytes:
        status: dict[str, object] = {"metadata": {}, "status": "Success"}
        if self.error:
            status = {"metadata": {}, "status": "Failure", "message": self.message(),
                      "reason": "InternalError", "code": 500,
                      "details": {"causes": [{"message": f"error executing command in container: "
                                                         f"{self.error}"}]}}
        elif self.exit_code:
            status = {"metadata": {}, "status": "Failure", "message": self.message(),
                      "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(self.exit_code)}]}}
        return json.dumps(status, separators=(",", ":")).encode()

    def for_protocol(self, status_json: bool) -> bytes:
        """What goes on the error stream: the Status (v4, v5), or a failure's text (older)."""
        if status_json:
            return self.status_json()
        return self.message().encode()


def parse_resize(buffer: bytearray) -> list[tuple[int, int]]:
    """Complete {"Width": w, "Height": h} objects at the front of buffer, consumed from it.

    The resize stream is a sequence of JSON objects (Go's json.Decoder on the client side);
    a partial object stays in the buffer for the next call. Malformed input raises ValueError.
    """
    sizes = []
    decoder = json.JSONDecoder()
    text = buffer.decode("utf-8", errors="strict") if buffer else ""
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            if len(text) - pos > 4096:
                raise ValueError("resize stream: not a JSON object") from None
            break  # incomplete: wait for more
        if not isinstance(obj, dict):
            raise ValueError(f"resize stream: expected an object, got {type(obj).__name__}")
        width, height = obj.get("Width", 0), obj.get("Height", 0)
        if not (isinstance(width, int) and isinstance(height, int)) or not (
                0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
            raise ValueError(f"resize stream: bad size {obj}")
        sizes.append((width, height))
        pos = end
    del buffer[:len(text[:pos].encode())]
    return sizes
