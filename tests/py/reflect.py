"""A third-party client: discovers patchgap's API by server reflection alone
(grpcio-reflection speaks v1alpha), then calls Query.FindPackage with message
classes built from the reflected descriptors. Prints one JSON line."""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

addr, package = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(addr)
db = ProtoReflectionDescriptorDatabase(channel)
services = sorted(db.get_services())
pool = descriptor_pool.DescriptorPool(db)
method = pool.FindServiceByName("patchgap.v1.Query").FindMethodByName("FindPackage")
Request = message_factory.GetMessageClass(method.input_type)
Response = message_factory.GetMessageClass(method.output_type)
call = channel.unary_unary(
    "/patchgap.v1.Query/FindPackage",
    request_serializer=Request.SerializeToString,
    response_deserializer=Response.FromString,
)
resp = call(Request(name=package), timeout=30)
print(json.dumps({
    "services": services,
    "query": resp.query,
    "hosts_total": resp.coverage.hosts_total,
    "pids": [m.key.pid for m in resp.matches],
    "versions": sorted({m.package.version for m in resp.matches}),
}))
