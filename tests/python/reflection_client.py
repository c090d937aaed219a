"""A generic gRPC client that knows nothing of tongban: it learns the
exchange's services and message types from server reflection alone
(grpcio-reflection, which speaks grpc.reflection.v1alpha), builds a
LookupRequest from the reflected descriptors, calls Exchange/Lookup over
mutual TLS and prints the outcome as one JSON object on stdout.

Usage: reflection_client.py TARGET CA CERT KEY MATTER EVIDENCE_TYPE ID_NUMBER NAME

No generated tongban code is imported (and none is on the path).
"""

import json
import sys


def main() -> int:
    target, ca, cert, key, matter, evidence_type, id_number, name = sys.argv[1:9]

    import grpc
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
    )
    # The exchange's certificate names localhost and 127.0.0.1.
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(target, credentials, options=options) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        exchange = pool.FindServiceByName("tongban.v1.Exchange")
        lookup = exchange.methods_by_name["Lookup"]
        request_class = message_factory.GetMessageClass(lookup.input_type)
        response_class = message_factory.GetMessageClass(lookup.output_type)
        request = json_format.ParseDict(
            {
                "case": {
                    "matter": matter,
                    "case_number": "PY-REFL-000001",
                    "operator_id": "clerk.reflection",
                },
                "subject": {"id_number": id_number, "name": name},
                "evidence_type": evidence_type,
            },
            request_class(),
        )
        call = channel.unary_unary(
            "/" + exchange.full_name + "/" + lookup.name,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        out = {
            "services": services,
            "methods": sorted(m.name for m in exchange.methods),
            "request_type": lookup.input_type.full_name,
            "tongban_modules": sorted(m for m in sys.modules if m.startswith("tongban")),
        }
        try:
            response = call(request, timeout=10)
        except grpc.RpcError as e:
            out.update({"ok": False, "code": e.code().name, "message": e.details()})
        else:
            out.update(
                {
                    "ok": True,
                    "response": json_format.MessageToDict(
                        response, preserving_proto_field_name=True
                    ),
                }
            )
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
