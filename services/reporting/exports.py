"""Report exports as XLSX and CSV bytes (DESIGN §4 reporting, §8 rates, §9 masking).

Pure on purpose: builders turn the plain dicts the reporting queries produce into `Sheet`s,
writers turn `Sheet`s into bytes. No framework, database or file here, so the HTTP routes
only choose a builder and send the bytes, and all of it tests in milliseconds.

Every text cell goes through one guard in both writers: phone numbers masked, characters
XML cannot hold dropped, and a leading = + - @ neutralised with a ' so Excel never runs a
formula an enterprise typed into its name or title.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from appeals_common import reference
from appeals_common.privacy import mask_name, mask_phone, mask_phones_in_text

__all__ = [
    "Labels", "Rate", "Sheet", "annual_review_sheets", "patrol_report_sheets",
    "safe_text", "sitin_summary_sheets", "to_csv", "to_xlsx",
]

DEFAULT_TZ = "Asia/Shanghai"
NO_RATE = "—"  # a rate with nothing to divide by: not 0%, which would read as a failure
YES, NO = "是", "否"

APPEAL_STATES: dict[str, str] = {
    "registered": "已挂号",
    "resolved_on_spot": "当场办结",
    "dispatched": "已交办",
    "in_progress": "办理中",
    "responded": "已答复",
    "reopened": "重办中",
    "closed": "已销号",
    "withdrawn": "已撤回",
}
CLASS_PROBLEM_STATES: dict[str, str] = {
    "suggested": "待确认",
    "confirmed": "已确认",
    "resolved": "已破解",
    "closed": "已销号",
}
QUARTERS = {1: "第一季度", 2: "第二季度", 3: "第三季度", 4: "第四季度"}

# Defined alongside the walkthrough and 附件3 work; a label not there shows as its code.
_WALKTHROUGH_LISTS: Mapping[str, str] = getattr(reference, "WALKTHROUGH_LISTS", {})
_SERVICE_ITEM_STATUSES: Mapping[str, str] = getattr(reference, "SERVICE_ITEM_STATUSES", {})

TOTALS: dict[str, str] = {
    "registered": "受理诉求(件)",
    "resolved_on_spot": "当场办结(件)",
    "assigned": "交办(件)",
    "signed_on_time": "按时签收(件)",
    "responded": "部门已响应(件)",
    "solved": "已解决(件)",
    "followed": "已回访(件)",
    "satisfied": "回访满意(件)",
    "closed": "已销号(件)",
    "closed_on_time": "按时办结(件)",
}
RATES: dict[str, tuple[str, str]] = {
    "response_rate": ("响应率", "按时签收的交办 ÷ 期内应签收的交办"),
    "solve_rate": ("解决率", "答复为“已解决”的诉求 ÷ 已答复的诉求"),
    "satisfaction_rate": ("满意率", "评价为非常满意、满意、基本满意的回访 ÷ 回访总数"),
    "closed_on_time_rate": ("按时办结率", "按时销号的诉求 ÷ 已销号的诉求"),
}

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MAX_CELL = 32767  # Excel's limit on one cell's text
_MIN_WIDTH, _MAX_WIDTH = 6, 60
_HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
_BOLD = Font(bold=True)
_WRAP = Alignment(wrap_text=True, vertical="top")


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Rate:
    """A share from 0 to 1, shown as a percentage; None (nothing to divide by) shows as —."""

    value: float | None


@dataclass
class Sheet:
    """One worksheet (or one CSV file).

    `caption` lines go above everything (XLSX only: a CSV starts with its data);
    `notes` is a key-value block (label, value) above the table, for cover sheets;
    then the `headers` row and the `rows`. Cell values may be str, int, float, Decimal,
    bool (是/否), date, datetime (aware; naive is taken as UTC), `Rate` or None.
    """

    title: str
    headers: list[str]
    rows: list[list[Any]]
    notes: list[tuple[str, Any]] = field(default_factory=list)
    caption: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Labels:
    """Names for codes that live in the registries (config/*.yaml), passed in so this module
    reads no files. A code without a name shows as itself."""

    departments: Mapping[str, str] = field(default_factory=dict)
    chains: Mapping[str, str] = field(default_factory=dict)
    categories: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_registries(cls, departments: Mapping[str, Any] | None = None,
                        chains: Mapping[str, Any] | None = None,
                        categories: Mapping[str, Any] | None = None) -> Labels:
        """From what load_departments / load_industry_chains / load_categories return."""
        def names(registry: Mapping[str, Any] | None) -> dict[str, str]:
            return {code: entry.name for code, entry in (registry or {}).items()}
        return cls(names(departments), names(chains), names(categories))

    def dept(self, code: Any, name: Any = None) -> str:
        return _named(name, self.departments, code)

    def chain(self, code: Any, name: Any = None) -> str:
        return _named(name, self.chains, code)

    def category(self, code: Any, name: Any = None) -> str:
        return _named(name, self.categories, code)


def _named(name: Any, names: Mapping[str, str], code: Any) -> str:
    if name:
        return str(name)
    if code is None or code == "":
        return ""
    if isinstance(code, list | tuple):  # several units on one item
        return "、".join(_named(None, names, c) for c in code)
    return names.get(code, str(code)) if isinstance(code, str) else str(code)


# --------------------------------------------------------------------------- cell values


def safe_text(value: str) -> str:
    """Text as it may appear in an export: phones masked, no control characters, no formula."""
    text = mask_phones_in_text(ILLEGAL_CHARACTERS_RE.sub("", value))
    if text.startswith(_FORMULA_START) or text.lstrip().startswith(_FORMULA_START[:4]):
        text = "'" + text
    return text[:_MAX_CELL]


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    # Excel has no time zones: show the clock on the wall in the district.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).replace(tzinfo=None)


def _csv_cell(value: Any, tz: ZoneInfo) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return YES if value else NO
    if isinstance(value, Rate):
        return NO_RATE if value.value is None else f"{value.value:.1%}"
    if isinstance(value, datetime):
        return _local(value, tz).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float | Decimal):
        return str(value)
    return safe_text(str(value))


def _xlsx_cell(value: Any, tz: ZoneInfo) -> tuple[Any, str | None, str]:
    """(value to store, number format or None, text used to size the column)."""
    if value is None:
        return None, None, ""
    if isinstance(value, bool):
        text = YES if value else NO
        return text, None, text
    if isinstance(value, Rate):
        if value.value is None:
            return NO_RATE, None, NO_RATE
        return float(value.value), "0.0%", f"{value.value:.1%}"
    if isinstance(value, datetime):
        return _local(value, tz), "yyyy-mm-dd hh:mm", "2026-01-01 00:00"
    if isinstance(value, date):
        return value, "yyyy-mm-dd", "2026-01-01"
    if isinstance(value, int | float):
        return value, None, str(value)
    if isinstance(value, Decimal):
        return float(value), None, str(value)
    text = safe_text(str(value))
    return text, None, text


def _width(text: str) -> int:
    """Columns a text takes in Excel: CJK characters are about two wide."""
    lines = text.split("\n") or [""]
    return max(sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)
               for line in lines)


# --------------------------------------------------------------------------- writers


def to_xlsx(sheets: list[Sheet], title: str | None = None, *, tz: str = DEFAULT_TZ) -> bytes:
    """An .xlsx workbook, one worksheet per Sheet.

    Headers bold and frozen, columns sized to their content, dates and times as Excel dates
    in local time (`tz`), numbers as numbers, `Rate`s as percentages. `title` becomes the
    document title and, when the first sheet has no caption, its caption.
    """
    zone = ZoneInfo(tz)
    workbook = Workbook()
    workbook.remove(workbook.active)
    workbook.properties.creator = "enterprise-appeals"
    if title:
        workbook.properties.title = title
    used: set[str] = set()
    for index, sheet in enumerate(sheets or [Sheet("Sheet1", [], [])]):
        caption = sheet.caption or ([title] if title and index == 0 else [])
        ws = workbook.create_sheet(_sheet_title(sheet.title, used))
        _write_sheet(ws, sheet, caption, zone)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def to_csv(sheet: Sheet, *, tz: str = DEFAULT_TZ) -> bytes:
    """One sheet as CSV: UTF-8 with a BOM (so Excel reads the Chinese), CRLF line ends.

    The notes block, if any, comes first as label,value lines and a blank line; then the
    header row and the rows. Captions are left out: a CSV starts with data.
    """
    zone = ZoneInfo(tz)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if sheet.notes:
        writer.writerows([_csv_cell(label, zone), _csv_cell(value, zone)] for label, value in sheet.notes)
        writer.writerow([])
    if sheet.headers:
        writer.writerow([_csv_cell(h, zone) for h in sheet.headers])
    writer.writerows([_csv_cell(v, zone) for v in row] for row in sheet.rows)
    return buffer.getvalue().encode("utf-8-sig")


def _sheet_title(title: str, used: set[str]) -> str:
    # Excel refuses []:*?/\ and more than 31 characters, and two sheets of one name.
    base = re.sub(r"[\[\]:*?/\\]", "_", title).strip("'")[:31] or "Sheet"
    candidate, n = base, 1
    while candidate.lower() in used:
        n += 1
        suffix = f"({n})"
        candidate = base[:31 - len(suffix)] + suffix
    used.add(candidate.lower())
    return candidate


def _write_sheet(ws: Worksheet, sheet: Sheet, caption: list[str], zone: ZoneInfo) -> None:
    widths: dict[int, int] = {}
    wrap_over: set[tuple[int, int]] = set()

    def put(row: int, col: int, value: Any) -> Any:
        stored, number_format, text = _xlsx_cell(value, zone)
        cell = ws.cell(row=row, column=col, value=stored)
        if isinstance(stored, str):
            cell.data_type = "s"  # never a formula, whatever the text
        if number_format:
            cell.number_format = number_format
        width = _width(text)
        widths[col] = max(widths.get(col, 0), width)
        if width > _MAX_WIDTH or "\n" in text:
            wrap_over.add((row, col))
        return cell

    span = max(len(sheet.headers), 2 if sheet.notes else 1)
    row = 1
    for i, line in enumerate(caption):
        cell = ws.cell(row=row, column=1, value=safe_text(line))
        cell.data_type = "s"
        cell.font = Font(bold=True, size=14 if i == 0 else 11)
        if span > 1:
            ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=span)
        row += 1
    for label, value in sheet.notes:
        put(row, 1, label).font = _BOLD
        put(row, 2, value)
        row += 1
    if sheet.headers:
        if sheet.notes:
            row += 1
        header_row = row
        for col, header in enumerate(sheet.headers, start=1):
            cell = put(row, col, header)
            cell.font, cell.fill = _BOLD, _HEADER_FILL
            cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        for values in sheet.rows:
            row += 1
            for col, value in enumerate(values, start=1):
                put(row, col, value)
        # A cover sheet's table sits under its notes: freezing there would pin the whole
        # cover, so only plain tables get a frozen header and a filter.
        if not sheet.notes:
            ws.freeze_panes = ws.cell(row=header_row + 1, column=1)
            if sheet.rows:
                ws.auto_filter.ref = (f"A{header_row}:{get_column_letter(len(sheet.headers))}{row}")
            ws.print_title_rows = f"{header_row}:{header_row}"
    for row_col in wrap_over:
        ws.cell(*row_col).alignment = _WRAP
    for col, width in widths.items():
        ws.column_dimensions[get_column_letter(col)].width = min(max(width + 2, _MIN_WIDTH), _MAX_WIDTH)
    # Printed on A4 landscape, one page wide: how leaders read the tables.
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True


# --------------------------------------------------------------------------- input helpers


def _date(value: Any) -> Any:
    """A date from a date, datetime or ISO string; anything else is shown as it is."""
    if isinstance(value, str) and value:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return _datetime(value)
    return value


def _datetime(value: Any) -> Any:
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _label(codes: Mapping[str, str], value: Any) -> str:
    if value is None:
        return ""
    return codes.get(value, str(value)) if isinstance(value, str) else str(value)


def _count(value: Any) -> Any:
    """A number of things given either as the number or as the things."""
    if isinstance(value, list | tuple | set | frozenset):
        return len(value)
    return value


def _joined(value: Any, numbered: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    items = [str(v) for v in value if v not in (None, "")]
    if numbered:
        return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
    return "；".join(items)


def _rate(value: Any) -> Rate:
    return value if isinstance(value, Rate) else Rate(None if value is None else float(value))


def _totals_notes(totals: Mapping[str, Any]) -> list[tuple[str, Any]]:
    notes = [(label, totals[key]) for key, label in TOTALS.items() if key in totals]
    # Counts the reporting side adds later still show, under their own key.
    notes += [(key, value) for key, value in totals.items()
              if key not in TOTALS and isinstance(value, int | float) and not isinstance(value, bool)]
    return notes


def _rates_notes(rates: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(label, _rate(rates.get(key))) for key, (label, _) in RATES.items()]


def _definitions() -> list[tuple[str, Any]]:
    return [(f"{label}口径", rule) for label, rule in RATES.values()]


def _quarter(value: Any) -> str:
    return QUARTERS.get(value, str(value)) if isinstance(value, int) else str(value or "")


# --------------------------------------------------------------------------- builders


def patrol_report_sheets(report: Mapping[str, Any], labels: Labels | None = None) -> list[Sheet]:
    """链式巡诊开展情况报告, with the 附件3 service item list and the appeals taken.

    Keys of `report` (missing ones show empty):
      activity_id, title, industry_chain (code), industry_chain_name, lead_unit (code),
      lead_unit_name, held_on (date or ISO str), plan_submitted_at, report_submitted_at
      (datetime or ISO str), plan_on_time, report_on_time (bool or None),
      policies_delivered (int), enterprises_served (int), class_problems (list[str]),
      summary (str),
      service_items: [{enterprise_name, contact_name, contact_phone, item, responsible_unit
        (code or name), status (code of reference.SERVICE_ITEM_STATUSES or text), reg_no,
        remarks}],
      appeals: [{reg_no, enterprise_name, title, lead_dept (code), lead_dept_name?,
        state (appeal state code), outcome (reference.RESPONSE_OUTCOMES code)}].
    Returns [cover, 附件3 list, appeals].
    """
    names = labels or Labels()
    chain = names.chain(report.get("industry_chain"), report.get("industry_chain_name"))
    lead = names.dept(report.get("lead_unit"), report.get("lead_unit_name"))
    held_on = _date(report.get("held_on"))
    items = list(report.get("service_items") or [])
    appeals = list(report.get("appeals") or [])
    cover = Sheet(
        title="巡诊开展情况", headers=[], rows=[],
        caption=[f"五华区{chain}“链式巡诊”开展情况报告" if chain else "五华区“链式巡诊”开展情况报告"],
        notes=[
            ("活动编号", report.get("activity_id")),
            ("活动名称", report.get("title")),
            ("产业链", chain),
            ("牵头单位", lead),
            ("巡诊日期", held_on),
            ("方案报送时间", _datetime(report.get("plan_submitted_at"))),
            ("方案是否按时报送(活动前3个工作日)", report.get("plan_on_time")),
            ("报告报送时间", _datetime(report.get("report_submitted_at"))),
            ("报告是否按时报送(活动后3个工作日内)", report.get("report_on_time")),
            ("送政策(项)", report.get("policies_delivered")),
            ("服务企业(家)", report.get("enterprises_served")),
            ("服务事项(项)", len(items)),
            ("收集诉求(件)", len(appeals)),
            ("类题破解", _joined(report.get("class_problems"), numbered=True)),
            ("情况概述", report.get("summary")),
        ])
    held_text = held_on.isoformat() if isinstance(held_on, date) else str(held_on or "")
    service_list = Sheet(
        title="附件3 巡诊服务事项清单",
        caption=["附件3", "五华区重点产业“巡诊”服务事项清单",
                 f"牵头单位：{lead}　产业链：{chain}　巡诊日期：{held_text}"],
        headers=["序号", "企业名称", "联系人", "联系电话", "服务事项", "责任单位", "办理情况", "挂号号",
                 "备注"],
        rows=[[i, item.get("enterprise_name"), mask_name(item.get("contact_name")),
               mask_phone(item.get("contact_phone")), item.get("item"),
               names.dept(item.get("responsible_unit")),
               _label(_SERVICE_ITEM_STATUSES, item.get("status")), item.get("reg_no"),
               item.get("remarks")]
              for i, item in enumerate(items, start=1)])
    appeal_sheet = Sheet(
        title="巡诊收集诉求",
        headers=["挂号号", "企业名称", "诉求标题", "承办单位", "状态", "办理结果"],
        rows=[[a.get("reg_no"), a.get("enterprise_name"), a.get("title"),
               names.dept(a.get("lead_dept"), a.get("lead_dept_name")),
               _label(APPEAL_STATES, a.get("state")),
               _label(reference.RESPONSE_OUTCOMES, a.get("outcome"))]
              for a in appeals])
    return [cover, service_list, appeal_sheet]


def sitin_summary_sheets(summary: Mapping[str, Any], labels: Labels | None = None) -> list[Sheet]:
    """季度坐诊情况汇总: the quarter's sit-ins, totals and 三率, and every appeal.

    Keys of `summary`:
      year (int), quarter (1-4),
      sit_ins: [{activity_id, held_on (date or ISO str), title, in_window (bool: held in
        the middle of the quarter's last month)}],
      totals: {registered, responded, solved, followed, satisfied, closed, closed_on_time}
        (ints; further int keys are shown under their own name),
      rates: {response_rate, solve_rate, satisfaction_rate, closed_on_time_rate}
        (0..1 or None),
      appeals: [{reg_no, registered_at (datetime or ISO str), enterprise_name, contact_phone,
        title, category (code), category_name?, lead_dept (code), lead_dept_name?,
        state (code), outcome (code), grade (reference.FOLLOWUP_GRADES code),
        closed_on_time (bool or None)}].
    Returns [cover, appeals].
    """
    names = labels or Labels()
    year, quarter = summary.get("year"), _quarter(summary.get("quarter"))
    sit_ins = list(summary.get("sit_ins") or [])
    cover = Sheet(
        title="坐诊情况汇总",
        caption=[f"五华区{year}年{quarter}“局长坐诊接诉”情况汇总"],
        notes=[("年度", year), ("季度", quarter), ("坐诊场次", len(sit_ins)),
               *_totals_notes(summary.get("totals") or {}),
               *_rates_notes(summary.get("rates") or {}), *_definitions()],
        headers=["坐诊日期", "活动名称", "是否在季末月中旬", "活动编号"],
        rows=[[_date(s.get("held_on")), s.get("title"), s.get("in_window"), s.get("activity_id")]
              for s in sit_ins])
    appeals = Sheet(
        title="诉求明细",
        headers=["挂号号", "受理时间", "企业名称", "联系电话", "诉求标题", "类别", "承办单位", "状态",
                 "办理结果", "回访评价", "是否按时办结"],
        rows=[[a.get("reg_no"), _datetime(a.get("registered_at")), a.get("enterprise_name"),
               mask_phone(a.get("contact_phone")), a.get("title"),
               names.category(a.get("category"), a.get("category_name")),
               names.dept(a.get("lead_dept"), a.get("lead_dept_name")),
               _label(APPEAL_STATES, a.get("state")),
               _label(reference.RESPONSE_OUTCOMES, a.get("outcome")),
               _label(reference.FOLLOWUP_GRADES, a.get("grade")), a.get("closed_on_time")]
              for a in summary.get("appeals") or []])
    return [cover, appeals]


_BREAKDOWN_HEADERS = ["交办数", "按时签收", "响应率", "已响应", "已解决", "解决率", "已回访", "满意",
                      "满意率", "办结数", "按时办结", "按时办结率"]


def _breakdown(title: str, first: str, rows: Iterable[Mapping[str, Any]],
               name_of: Any) -> Sheet:
    return Sheet(
        title=title, headers=[first, *_BREAKDOWN_HEADERS],
        rows=[[name_of(r.get("key"), r.get("name")), r.get("assigned"), r.get("signed_on_time"),
               _rate(r.get("response_rate")), r.get("responded"), r.get("solved"),
               _rate(r.get("solve_rate")), r.get("followed"), r.get("satisfied"),
               _rate(r.get("satisfaction_rate")), r.get("closed"), r.get("closed_on_time"),
               _rate(r.get("closed_on_time_rate"))]
              for r in rows])


def annual_review_sheets(review: Mapping[str, Any], labels: Labels | None = None) -> list[Sheet]:
    """年度全面复盘: overview, 三率 by department / channel / chain, class problems, typical
    cases, whether the scheduled sit-ins and patrols took place, and the walkthrough lists.

    Keys of `review`:
      year (int), totals {…as in sitin_summary_sheets, plus assigned, signed_on_time…},
      rates {response_rate, solve_rate, satisfaction_rate, closed_on_time_rate},
      by_department / by_channel / by_chain: [{key (dept code / channel code / chain code),
        name?, assigned, signed_on_time, response_rate, responded, solved, solve_rate,
        followed, satisfied, satisfaction_rate, closed, closed_on_time, closed_on_time_rate}],
      class_problems: [{class_id, industry_chain (code), industry_chain_name?, category (code),
        category_name?, lead_entity (dept code or name), state (code), measures (str or
        list[str]), promote (bool: experience copied to other industries), appeals (int or
        list of reg_nos)}],
      typical_cases: [{reg_no, enterprise_name, title, category, category_name?, outcome,
        grade, reason}],
      compliance: {sit_ins: [{month (3/6/9/12), held (bool), held_on (date/ISO str or None)}],
                   patrols: [{industry_chain (code), name?, held (bool), patrols (int),
                              plans_on_time (int), reports_on_time (int)}]},
      walkthrough_lists: [{list (problem/demand/optimization), total, closed, open}].
    Returns [总体情况, 按承办单位, 按受理渠道, 按产业链, 类题破解, 典型案例, 活动开展情况, 走流程清单].
    """
    names = labels or Labels()
    year = review.get("year")
    overview = Sheet(
        title="总体情况", headers=[], rows=[],
        caption=[f"五华区{year}年“局长坐诊接诉”全面复盘"],
        notes=[("年度", year), *_totals_notes(review.get("totals") or {}),
               *_rates_notes(review.get("rates") or {}), *_definitions()])

    def channel_name(code: Any, name: Any = None) -> str:
        return _named(name, reference.CHANNELS, code)

    by_department = _breakdown("按承办单位", "单位", review.get("by_department") or [], names.dept)
    by_channel = _breakdown("按受理渠道", "渠道", review.get("by_channel") or [], channel_name)
    by_chain = _breakdown("按产业链", "产业链", review.get("by_chain") or [], names.chain)

    def field_of(problem: Mapping[str, Any]) -> str:
        parts = [names.chain(problem.get("industry_chain"), problem.get("industry_chain_name")),
                 names.category(problem.get("category"), problem.get("category_name"))]
        return " / ".join(p for p in parts if p)

    class_problems = Sheet(
        title="类题破解",
        headers=["编号", "产业链/领域", "牵头主体", "状态", "措施", "是否复制推广", "涉及诉求数"],
        rows=[[p.get("class_id"), field_of(p), names.dept(p.get("lead_entity")),
               _label(CLASS_PROBLEM_STATES, p.get("state")), _joined(p.get("measures")),
               p.get("promote"), _count(p.get("appeals"))]
              for p in review.get("class_problems") or []])
    typical = Sheet(
        title="典型案例",
        headers=["挂号号", "企业名称", "诉求标题", "类别", "办理结果", "回访评价", "典型原因"],
        rows=[[c.get("reg_no"), c.get("enterprise_name"), c.get("title"),
               names.category(c.get("category"), c.get("category_name")),
               _label(reference.RESPONSE_OUTCOMES, c.get("outcome")),
               _label(reference.FOLLOWUP_GRADES, c.get("grade")), c.get("reason")]
              for c in review.get("typical_cases") or []])
    compliance = review.get("compliance") or {}
    activity_rows: list[list[Any]] = []
    for s in compliance.get("sit_ins") or []:
        month = s.get("month")
        quarter = _quarter((month + 2) // 3) if isinstance(month, int) else ""
        activity_rows.append([
            reference.ACTIVITY_KINDS["sit_in"], f"{month}月（{quarter}）" if quarter else str(month),
            "季末月中旬主要领导坐诊", 1 if s.get("held") else 0, _date(s.get("held_on")), None, None,
            bool(s.get("held"))])
    for p in compliance.get("patrols") or []:
        activity_rows.append([
            reference.ACTIVITY_KINDS["chain_patrol"],
            names.chain(p.get("industry_chain"), p.get("name")),
            "每年至少1次专场巡诊；方案活动前3个工作日、报告活动后3个工作日内报送",
            p.get("patrols"), None, p.get("plans_on_time"), p.get("reports_on_time"),
            bool(p.get("held"))])
    activities = Sheet(
        title="活动开展情况",
        headers=["活动", "对象", "要求", "开展次数", "开展日期", "方案按时报送(次)", "报告按时报送(次)",
                 "是否达标"],
        rows=activity_rows)
    walkthrough = Sheet(
        title="走流程清单",
        headers=["清单", "总数", "已销号", "未销号", "销号率"],
        rows=[[_label(_WALKTHROUGH_LISTS, w.get("list")), w.get("total"), w.get("closed"),
               w.get("open"),
               Rate(w["closed"] / w["total"] if w.get("total") and w.get("closed") is not None else None)]
              for w in review.get("walkthrough_lists") or []])
    return [overview, by_department, by_channel, by_chain, class_problems, typical, activities,
            walkthrough]
