"""Loopback emulators of the provider APIs, written from the provider documents only.

`server.EmulatorServer` is not imported here on purpose: `python -m tests.emulators.server`
would otherwise load that module twice.
"""

from tests.emulators.base import Emulator, Fault
from tests.emulators.robo_pk import PkEmulator
from tests.emulators.robo_ro import RoEmulator

__all__ = ["Emulator", "Fault", "PkEmulator", "RoEmulator"]
