"""Retrieval-augmented generation: chunk documents, embed them into a vector store, retrieve, answer, cite."""

from adaptlab.rag.answer import Answer, Answerer
from adaptlab.rag.index import IndexReport, RagIndex
from adaptlab.rag.retrieval import Retrieval
from adaptlab.rag.retriever import read_pairs, split_pairs, train_retriever
from adaptlab.rag.stores import open_store
from adaptlab.rag.stores.base import Hit

__all__ = ["Answer", "Answerer", "Hit", "IndexReport", "RagIndex", "Retrieval", "open_store", "read_pairs", "split_pairs",
           "train_retriever"]
