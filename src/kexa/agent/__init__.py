"""Tool-use agents (K-EXAONE report §3.3): the loop, typed tools, the summarizer and trajectory-compressor
sub-agents, and synthetic verifiable environments. See docs/agents.md.

    from kexa.agent import Agent, AgentConfig, EndpointClient, ToolBox
"""

from .client import ChatClient, ClientError, EndpointClient, EngineClient, Reply, ReplayClient
from .compressor import RECORD_SCHEMA, Compressor
from .envs import Environment, check_task, generate, load_tasks, screen, solve, verify
from .loop import Agent, AgentConfig, replay
from .summarizer import Summarizer
from .tools import ToolBox, ToolOutput, ToolResult, function_schema

__all__ = ["Agent", "AgentConfig", "ChatClient", "ClientError", "Compressor", "EndpointClient", "EngineClient",
           "Environment", "RECORD_SCHEMA", "Reply", "ReplayClient", "Summarizer", "ToolBox", "ToolOutput",
           "ToolResult", "check_task", "function_schema", "generate", "load_tasks", "replay", "screen", "solve",
           "verify"]
