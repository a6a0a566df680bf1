"""The Pulumi program: the hf-writer from this stack's configuration (see hf_writer.py)."""

import pulumi
from hf_writer import HfWriterConfig, hf_writer

writer = hf_writer(HfWriterConfig.from_pulumi(pulumi.Config()))
pulumi.export("deployment", writer.deployment.metadata.name)
pulumi.export("secret", writer.secret.metadata.name)
