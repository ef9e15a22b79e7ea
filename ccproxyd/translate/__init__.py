"""Pure protocol translation between the Anthropic Messages API and OpenAI Chat Completions."""
