"""What ``cascade lint`` found: a ``Problem`` (what is wrong, where, the fix) and a file's ``Report``
(its problems, what was analyzed or compared, how long it took), rendered for a person or as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """What is wrong, where (file, line, processor), and how to fix it."""

    check: str
    message: str
    fix: str
    file: str
    line: int | None = None
    processor: str | None = None
    statement: str | None = None  # for sql problems: which statement (transform, merge, gap query ...)

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        who = f" processor {self.processor}" if self.processor else ""
        what = f" [{self.check}{': ' + self.statement if self.statement else ''}]"
        return f"{where}:{who}{what} {self.message}\n    fix: {self.fix}"


@dataclass
class Report:
    file: str
    problems: list[Problem] = field(default_factory=list)
    statements: int = 0  # SQL statements checked (analyzed now or verdict reused)
    seconds: float = 0.0
    sql_checked: bool = False  # the SQL analysis ran (not --no-sql, and the definition loads)
    tables_checked: str | None = None  # where existing tables were compared (None: no local stack)
    statements_reused: int = 0  # of ``statements``: verdicts reused from an earlier analysis (cache)
    sql_not_checked: list[str] = field(default_factory=list)  # processors set aside for problems above

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "ok": self.ok, "problems": [asdict(p) for p in self.problems],
                "sql_checked": self.sql_checked, "sql_statements_analyzed": self.statements,
                "sql_statements_reused": self.statements_reused, "sql_not_checked": self.sql_not_checked,
                "tables_checked": self.tables_checked,
                "seconds": round(self.seconds, 2)}

    def render(self) -> str:
        lines = [p.render() for p in self.problems]
        summary = (f"{self.file}: {len(self.problems)} problem(s)" if self.problems else f"{self.file}: ok")
        sql = (f"{self.statements} SQL statements analyzed by ZetaSQL" if self.sql_checked
               else "SQL not analyzed" + ("" if self.problems else ": --no-sql"))
        if self.sql_checked and self.statements_reused:
            sql += f" ({self.statements_reused} verdicts reused: statement unchanged since analyzed)"
        if self.sql_checked and self.sql_not_checked:
            sql += (f"; not the SQL of {', '.join(self.sql_not_checked)} (set aside for the problems above)")
        tables = (f"existing tables compared: {self.tables_checked}" if self.tables_checked
                  else "existing tables not compared: no local stack running")
        return "\n".join([*lines, f"{summary} ({sql}; {tables}; {self.seconds:.1f} s)"])
