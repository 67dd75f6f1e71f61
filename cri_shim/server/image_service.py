"""runtime.v1.ImageService."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cri_shim.criapi import api_pb2_grpc
from cri_shim.server.unimplemented import fill_unimplemented

if TYPE_CHECKING:
    from cri_shim.daemon import Daemon


class ImageService(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon


fill_unimplemented(ImageService, api_pb2_grpc.ImageServiceServicer, "ImageService")
