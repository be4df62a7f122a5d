"""A small Python client of the retrieval service.

    with RetrievalClient("127.0.0.1:8600") as client:
        response = client.retrieve(["pin_1", "pin_2"], followed_topics=["topic_0003"], budget=100)
        for c in response.candidates: print(c.item_id, c.retriever, c.score)
"""

from __future__ import annotations

import grpc

from serving.protos import retrieval_pb2 as pb
from serving.protos import retrieval_pb2_grpc as pb_grpc

# The keys of `RetrieveResponse.stage_ms` (milliseconds), in the order a
# request passes them; all but total add up to total. towers = until the
# last user tower answered; ann = the searches and filters not hidden behind
# the towers; collect = the request thread picking up the lists (its
# wake-up, stacking them, the response header); merge = budgets and merge;
# response = the candidates' bytes.
STAGES = ("towers", "ann", "collect", "merge", "response", "total")


def retrieve_request(history: list[str], negative: list[bool] | None = None, followed_topics: list[str] = (),
                     budget: int = 0, seed: int = 0, merge_policy: str = "") -> pb.RetrieveRequest:
    """A `RetrieveRequest` (negative: one flag per history item, default none)."""
    negative = list(negative or [False] * len(history))
    return pb.RetrieveRequest(
        history=[pb.Engagement(item_id=i, negative=bool(n)) for i, n in zip(history, negative)],
        followed_topics=list(followed_topics), budget=budget, seed=seed, merge_policy=merge_policy)


class RetrievalClient:
    """Sends `RetrieveRequest`s; gRPC errors surface as `grpc.RpcError`."""

    def __init__(self, address: str, timeout: float = 5.0):
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.RetrievalStub(self.channel)
        self.timeout = timeout

    def retrieve(self, history: list[str], negative: list[bool] | None = None,
                 followed_topics: list[str] = (), budget: int = 0, seed: int = 0,
                 merge_policy: str = "") -> pb.RetrieveResponse:
        return self.stub.Retrieve(retrieve_request(history, negative, followed_topics, budget, seed, merge_policy),
                                  timeout=self.timeout)

    def health(self) -> str:
        from common.extras import require

        health_pb2 = require("grpc_health.v1.health_pb2")
        health_pb2_grpc = require("grpc_health.v1.health_pb2_grpc")
        status = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                 timeout=self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
