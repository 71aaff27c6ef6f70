"""The archive journal: a COPY to the processed folder, recorded before it is sent.

A crash between COPY and EXPUNGE leaves a note here; the next move then recognises the
copies already made instead of copying the same messages again.
"""

from __future__ import annotations

from supportd.services.ports import UnitOfWorkFactory


class ArchiveLog:
    """ArchiveJournal for one mailbox, each change in its own (fenced) commit."""

    def __init__(self, uow: UnitOfWorkFactory, mailbox: str, epoch: int | None) -> None:
        self.uow = uow
        self.mailbox = mailbox
        self.epoch = epoch

    def pending(self) -> tuple[int, int]:
        with self.uow() as store:
            return store.archive_pending(self.mailbox)

    def begin(self, up_to_uid: int, dest_uidnext: int) -> None:
        self._set(up_to_uid, dest_uidnext)

    def clear(self) -> None:
        self._set(0, 0)

    def _set(self, uid: int, dest_uidnext: int) -> None:
        with self.uow() as store:
            store.set_archive_pending(self.mailbox, uid, dest_uidnext, self.epoch)
            store.commit()
