"""``medfed hub init``: create (migrate) the database and the first administrator."""

from __future__ import annotations

from sqlalchemy import func, select

from medfed.common.errors import Conflict
from medfed.common.resources import Role
from medfed.hub.config import HubSettings
from medfed.hub.db.migrate import upgrade
from medfed.hub.db.models import User
from medfed.hub.db.session import make_engine, make_sessionmaker
from medfed.hub.services import accounts, auth


def init_hub(
    settings: HubSettings, *, organization: str, username: str, password: str
) -> tuple[int, str]:
    """Create the schema, an organization and a superuser; return (user id, API token)."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
        with make_sessionmaker(engine)() as session:
            if session.scalar(select(func.count()).select_from(User)):
                raise Conflict("the hub is initialized already (it has users)")
            org = accounts.create_organization(session, actor=None, name=organization)
            user = accounts.create_user(
                session,
                actor=None,
                username=username,
                password=password,
                organization_id=org.id,
                roles=[Role.admin],
                is_superuser=True,
            )
            _, token = auth.create_token(session, user=user, name="init", days=settings.token_days)
            session.commit()
            return user.id, token
    finally:
        engine.dispose()
