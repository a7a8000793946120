"""Report exports: what leaders open in Excel is right, readable and leaks no phone number."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.workbook.workbook import Workbook

from appeals_common.privacy import mask_phone, mask_phones_in_text
from appeals_common.registries import load_categories, load_departments, load_industry_chains
from services.reporting import exports
from services.reporting.exports import (
    Labels,
    Rate,
    Sheet,
    annual_review_sheets,
    patrol_report_sheets,
    sitin_summary_sheets,
    to_csv,
    to_xlsx,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"
RAW_PHONES = ("13812345678", "13912345678", "0871-65123456", "18687654321", "15011112222")
# Anything that still looks like a callable number once the file is written.
PHONE_RE = re.compile(r"(?<!\d)(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})(?!\d)")
FORMULA_NAME = '=HYPERLINK("http://evil.example","点击领取补贴")'


@pytest.fixture(scope="module")
def labels() -> Labels:
    departments = load_departments(CONFIG)
    return Labels.from_registries(departments, load_industry_chains(CONFIG, departments),
                                  load_categories(CONFIG))


def patrol_report() -> dict[str, Any]:
    return {
        "activity_id": "ACT-2026-CP-003", "title": "商贸消费产业链“链式巡诊”进商圈",
        "industry_chain": "trade_consumption", "industry_chain_name": None,
        "lead_unit": "swtcj", "lead_unit_name": None, "held_on": "2026-04-15",
        "plan_submitted_at": "2026-04-09T01:30:00+00:00", "plan_on_time": True,
        "report_submitted_at": datetime(2026, 4, 21, 8, 0, tzinfo=UTC), "report_on_time": False,
        "policies_delivered": 12, "enterprises_served": 35,
        "class_problems": ["商圈外摆审批标准不统一", "夜间经营噪音执法尺度"],
        "summary": "走访顺城商圈企业35家，现场答复8项；联系人王科长13912345678。",
        "service_items": [
            {"enterprise_name": "昆明顺城商贸有限公司", "contact_name": "李明",
             "contact_phone": "13812345678", "item": "外摆经营许可咨询",
             "responsible_unit": "scjgj", "status": "done", "reg_no": "WH-2026-000101",
             "remarks": "当场答复"},
            {"enterprise_name": FORMULA_NAME, "contact_name": "张华",
             "contact_phone": "0871-65123456", "item": "+充值 -1 活动备案",
             "responsible_unit": ["swtcj", "wlj"], "status": "in_progress",
             "reg_no": "WH-2026-000102", "remarks": None},
        ],
        "appeals": [
            {"reg_no": "WH-2026-000102", "enterprise_name": FORMULA_NAME,
             "title": "促销活动备案流程咨询", "lead_dept": "swtcj", "state": "in_progress",
             "outcome": None},
            {"reg_no": "WH-2026-000103", "enterprise_name": "五华区老街餐饮店",
             "title": "油烟净化补贴申请", "lead_dept": "czj", "lead_dept_name": "区财政局",
             "state": "closed", "outcome": "solved"},
        ],
    }


def sitin_summary() -> dict[str, Any]:
    return {
        "year": 2026, "quarter": 1,
        "sit_ins": [{"activity_id": "ACT-2026-SI-01", "held_on": date(2026, 3, 16),
                     "title": "第一季度局长坐诊", "in_window": True}],
        "totals": {"registered": 40, "responded": 36, "solved": 30, "followed": 20,
                   "satisfied": 17, "closed": 25, "closed_on_time": 24},
        "rates": {"response_rate": 0.95, "solve_rate": 0.8333, "satisfaction_rate": 0.85,
                  "closed_on_time_rate": None},
        "appeals": [
            {"reg_no": "WH-2026-000011", "registered_at": "2026-03-16T02:05:00+00:00",
             "enterprise_name": "云南五华建设工程有限公司", "contact_phone": "18687654321",
             "title": "施工许可办理进度", "category": "0102", "lead_dept": "zjj",
             "state": "closed", "outcome": "solved", "grade": "satisfied",
             "closed_on_time": True},
            {"reg_no": "WH-2026-000012", "registered_at": datetime(2026, 3, 16, 3, 0, tzinfo=UTC),
             "enterprise_name": "@SUM(A1:A9)", "contact_phone": "15011112222",
             "title": "请回电15011112222：用电增容", "category": "0402", "lead_dept": "fgj",
             "state": "in_progress", "outcome": None, "grade": None, "closed_on_time": None},
        ],
    }


def annual_review() -> dict[str, Any]:
    dept_row = {"key": "zjj", "assigned": 50, "signed_on_time": 47, "response_rate": 0.94,
                "responded": 48, "solved": 40, "solve_rate": 0.8333, "followed": 30,
                "satisfied": 27, "satisfaction_rate": 0.9, "closed": 45, "closed_on_time": 40,
                "closed_on_time_rate": 0.8889}
    return {
        "year": 2026,
        "totals": {"registered": 320, "assigned": 280, "signed_on_time": 270, "responded": 260,
                   "solved": 210, "followed": 200, "satisfied": 180, "closed": 250,
                   "closed_on_time": 230},
        "rates": {"response_rate": 0.9643, "solve_rate": 0.8077, "satisfaction_rate": 0.9,
                  "closed_on_time_rate": 0.92},
        "by_department": [dept_row, {**dept_row, "key": "fgj", "followed": 0,
                                     "satisfaction_rate": None}],
        "by_channel": [{**dept_row, "key": "sit_in"}, {**dept_row, "key": "hotline_12345"}],
        "by_chain": [{**dept_row, "key": "culture_tourism"},
                     {**dept_row, "key": "new_chain", "name": "低空经济"}],
        "class_problems": [
            {"class_id": "CP-2026-004", "industry_chain": "construction_realestate",
             "category": "0102", "lead_entity": "zjj", "state": "resolved",
             "measures": ["施工许可并联审批", "图审结果互认"], "promote": True,
             "appeals": ["WH-2026-000011", "WH-2026-000031", "WH-2026-000077"]},
        ],
        "typical_cases": [
            {"reg_no": "WH-2026-000011", "enterprise_name": "-2+3 科技有限公司",
             "title": "施工许可办理进度", "category": "0102", "outcome": "solved",
             "grade": "very_satisfied", "reason": "并联审批后5个工作日办结"},
        ],
        "compliance": {
            "sit_ins": [{"month": 3, "held": True, "held_on": "2026-03-16"},
                        {"month": 6, "held": False, "held_on": None}],
            "patrols": [{"industry_chain": "trade_consumption", "held": True, "patrols": 2,
                         "plans_on_time": 2, "reports_on_time": 1},
                        {"industry_chain": "modern_finance", "held": False, "patrols": 0,
                         "plans_on_time": 0, "reports_on_time": 0}],
        },
        "walkthrough_lists": [{"list": "problem", "total": 12, "closed": 9, "open": 3},
                              {"list": "optimization", "total": 0, "closed": 0, "open": 0}],
    }


def reopen(data: bytes) -> Workbook:
    return openpyxl.load_workbook(io.BytesIO(data))


def all_cells(workbook: Workbook) -> list[Any]:
    return [cell.value for ws in workbook.worksheets for row in ws.iter_rows() for cell in row
            if cell.value is not None]


def assert_no_raw_phone(workbook: Workbook) -> None:
    for value in all_cells(workbook):
        text = str(value)
        assert not PHONE_RE.search(text), text
        assert not any(phone in text for phone in RAW_PHONES), text


def row_values(ws: Any, row: int) -> list[Any]:
    return [c.value for c in ws[row]]


def find_row(ws: Any, first: Any) -> int:
    for row in ws.iter_rows(min_col=1, max_col=1):
        if row[0].value == first:
            return row[0].row
    raise AssertionError(f"no row starting with {first!r} in {ws.title}")


def notes_of(ws: Any) -> dict[str, Any]:
    return {r[0].value: r[1].value for r in ws.iter_rows(min_col=1, max_col=2) if r[0].value}


# --------------------------------------------------------------------------- privacy


@pytest.mark.parametrize("phone,masked", [
    (None, ""), ("", ""), ("+86 138 0013 8000", "138****8000"), ("13812345678", "138****5678")])
def test_mask_phone_edges(phone, masked):
    assert mask_phone(phone) == masked


def test_phones_in_free_text_are_masked_and_codes_left_alone():
    text = ("李经理13812345678，座机0871-65123456，或+86 139-1234-5678；"
            "挂号号WH-2026-000123，信用代码91530102MA6K13812345678X，金额13800000000.5")
    masked = mask_phones_in_text(text)
    assert "138****5678" in masked and "087****3456" in masked and "139****5678" in masked
    assert "WH-2026-000123" in masked and "91530102MA6K13812345678X" in masked
    assert "13812345678，" not in masked and "65123456" not in masked
    assert mask_phones_in_text(None) == ""


# --------------------------------------------------------------------------- patrol report


def test_patrol_report_xlsx(labels, tmp_path):
    data = to_xlsx(patrol_report_sheets(patrol_report(), labels), title="链式巡诊开展情况报告")
    (tmp_path / "patrol.xlsx").write_bytes(data)  # a real file Excel could open
    wb = openpyxl.load_workbook(tmp_path / "patrol.xlsx")
    assert wb.sheetnames == ["巡诊开展情况", "附件3 巡诊服务事项清单", "巡诊收集诉求"]
    assert wb.properties.title == "链式巡诊开展情况报告"

    cover = notes_of(wb["巡诊开展情况"])
    assert cover["产业链"] == "商贸消费" and cover["牵头单位"] == "区商务和投资促进局"
    assert cover["巡诊日期"] == datetime(2026, 4, 15)
    # 01:30 UTC is 09:30 in Kunming; Excel gets the wall clock, no offset.
    assert cover["方案报送时间"] == datetime(2026, 4, 9, 9, 30)
    assert cover["方案是否按时报送(活动前3个工作日)"] == "是"
    assert cover["报告是否按时报送(活动后3个工作日内)"] == "否"
    assert cover["送政策(项)"] == 12 and cover["服务企业(家)"] == 35
    assert cover["类题破解"] == "1. 商圈外摆审批标准不统一\n2. 夜间经营噪音执法尺度"
    assert "139****5678" in cover["情况概述"]
    assert wb["巡诊开展情况"]["A1"].value == "五华区商贸消费“链式巡诊”开展情况报告"

    items = wb["附件3 巡诊服务事项清单"]
    assert items["A2"].value == "五华区重点产业“巡诊”服务事项清单"
    header = find_row(items, "序号")
    assert row_values(items, header) == ["序号", "企业名称", "联系人", "联系电话", "服务事项",
                                         "责任单位", "办理情况", "挂号号", "备注"]
    assert items.cell(header, 1).font.b
    assert items.freeze_panes == f"A{header + 1}"
    first, second = row_values(items, header + 1), row_values(items, header + 2)
    # Contacts' names are masked like their phones (张三 → 张*), for every reader.
    assert first[:4] == [1, "昆明顺城商贸有限公司", "李*", "138****5678"]
    assert second[2] == "张*"
    assert first[5:8] == ["区市场监督管理局", exports._SERVICE_ITEM_STATUSES.get("done", "done"),
                          "WH-2026-000101"]
    assert second[3] == "087****3456" and second[5] == "区商务和投资促进局、区文化和旅游局"
    # The formula an enterprise typed is text, not a formula Excel would run.
    assert second[1] == "'" + FORMULA_NAME and items.cell(header + 2, 2).data_type == "s"
    assert second[4] == "'+充值 -1 活动备案"

    appeals = wb["巡诊收集诉求"]
    assert row_values(appeals, 1) == ["挂号号", "企业名称", "诉求标题", "承办单位", "状态", "办理结果"]
    assert row_values(appeals, 2)[3:5] == ["区商务和投资促进局", "办理中"]
    assert row_values(appeals, 3)[3:] == ["区财政局", "已销号", "已解决"]
    assert not any(str(v).startswith(("=", "+", "-", "@")) for v in all_cells(wb))
    assert_no_raw_phone(wb)


def test_patrol_report_without_registries_falls_back_to_names_then_codes():
    report = {**patrol_report(), "industry_chain_name": "商贸消费产业链"}
    cover, items, _ = patrol_report_sheets(report)
    notes = dict(cover.notes)
    assert notes["产业链"] == "商贸消费产业链" and notes["牵头单位"] == "swtcj"
    assert items.rows[0][5] == "scjgj"


# --------------------------------------------------------------------------- sit-in summary


def test_sitin_summary_xlsx(labels):
    wb = reopen(to_xlsx(sitin_summary_sheets(sitin_summary(), labels)))
    assert wb.sheetnames == ["坐诊情况汇总", "诉求明细"]
    cover_ws = wb["坐诊情况汇总"]
    cover = notes_of(cover_ws)
    assert cover["年度"] == 2026 and cover["季度"] == "第一季度" and cover["受理诉求(件)"] == 40
    assert cover["满意率"] == pytest.approx(0.85)
    rate_row = find_row(cover_ws, "满意率")
    assert "%" in cover_ws.cell(rate_row, 2).number_format
    assert cover["按时办结率"] == "—"  # nothing closed yet: no rate, not 0%
    held = find_row(cover_ws, "坐诊日期")
    assert row_values(cover_ws, held)[:4] == ["坐诊日期", "活动名称", "是否在季末月中旬", "活动编号"]
    assert cover_ws.cell(held, 1).font.b
    assert row_values(cover_ws, held + 1)[:4] == [datetime(2026, 3, 16), "第一季度局长坐诊", "是",
                                                  "ACT-2026-SI-01"]
    assert cover_ws.cell(held + 1, 1).is_date

    appeals = wb["诉求明细"]
    assert row_values(appeals, 1) == ["挂号号", "受理时间", "企业名称", "联系电话", "诉求标题", "类别",
                                      "承办单位", "状态", "办理结果", "回访评价", "是否按时办结"]
    assert appeals.freeze_panes == "A2"
    first, second = row_values(appeals, 2), row_values(appeals, 3)
    assert first == ["WH-2026-000011", datetime(2026, 3, 16, 10, 5), "云南五华建设工程有限公司",
                     "186****4321", "施工许可办理进度", "工程建设项目审批", "区住房和城乡建设局",
                     "已销号", "已解决", "满意", "是"]
    assert appeals.cell(2, 2).is_date and appeals.cell(2, 2).number_format == "yyyy-mm-dd hh:mm"
    assert second[2] == "'@SUM(A1:A9)" and second[3] == "150****2222"
    assert second[4] == "请回电150****2222：用电增容"
    assert second[7:] == ["办理中", None, None, None]
    assert_no_raw_phone(wb)


# --------------------------------------------------------------------------- annual review


def test_annual_review_xlsx(labels):
    wb = reopen(to_xlsx(annual_review_sheets(annual_review(), labels), title="2026年全面复盘"))
    assert wb.sheetnames == ["总体情况", "按承办单位", "按受理渠道", "按产业链", "类题破解", "典型案例",
                             "活动开展情况", "走流程清单"]
    overview = notes_of(wb["总体情况"])
    assert overview["交办(件)"] == 280 and overview["响应率"] == pytest.approx(0.9643)
    assert "应签收" in overview["响应率口径"]

    depts = wb["按承办单位"]
    assert row_values(depts, 1) == ["单位", "交办数", "按时签收", "响应率", "已响应", "已解决", "解决率",
                                    "已回访", "满意", "满意率", "办结数", "按时办结", "按时办结率"]
    assert row_values(depts, 2)[:4] == ["区住房和城乡建设局", 50, 47, 0.94]
    assert depts.cell(2, 4).number_format == "0.0%"
    assert row_values(depts, 3)[0] == "区发展和改革局" and row_values(depts, 3)[9] == "—"
    assert [r[0].value for r in wb["按受理渠道"].iter_rows(min_row=2)] == ["局长坐诊", "12345热线"]
    assert [r[0].value for r in wb["按产业链"].iter_rows(min_row=2)] == ["文化旅游", "低空经济"]

    problems = wb["类题破解"]
    assert row_values(problems, 1) == ["编号", "产业链/领域", "牵头主体", "状态", "措施", "是否复制推广",
                                       "涉及诉求数"]
    assert row_values(problems, 2) == ["CP-2026-004", "建筑与房地产 / 工程建设项目审批",
                                       "区住房和城乡建设局", "已破解", "施工许可并联审批；图审结果互认",
                                       "是", 3]
    cases = wb["典型案例"]
    assert row_values(cases, 2) == ["WH-2026-000011", "'-2+3 科技有限公司", "施工许可办理进度",
                                    "工程建设项目审批", "已解决", "非常满意", "并联审批后5个工作日办结"]

    activities = wb["活动开展情况"]
    rows = [row_values(activities, r) for r in range(2, activities.max_row + 1)]
    assert rows[0][:2] == ["局长坐诊", "3月（第一季度）"] and rows[0][4] == datetime(2026, 3, 16)
    assert rows[0][7] == "是" and rows[1][7] == "否" and rows[1][4] is None
    assert rows[2][:2] == ["链式巡诊", "商贸消费"] and rows[2][3] == 2 and rows[2][7] == "是"
    assert rows[3][1] == "现代金融" and rows[3][7] == "否"

    lists = wb["走流程清单"]
    problem_label = exports._WALKTHROUGH_LISTS.get("problem", "problem")
    assert row_values(lists, 2) == [problem_label, 12, 9, 3, 0.75]
    assert row_values(lists, 3)[4] == "—"
    assert_no_raw_phone(wb)


# --------------------------------------------------------------------------- CSV


def test_csv_has_bom_crlf_and_round_trips_chinese(labels):
    _, appeals = sitin_summary_sheets(sitin_summary(), labels)
    data = to_csv(appeals)
    assert data.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["挂号号", "受理时间", "企业名称", "联系电话", "诉求标题", "类别", "承办单位",
                       "状态", "办理结果", "回访评价", "是否按时办结"]
    assert rows[1] == ["WH-2026-000011", "2026-03-16 10:05", "云南五华建设工程有限公司", "186****4321",
                       "施工许可办理进度", "工程建设项目审批", "区住房和城乡建设局", "已销号", "已解决",
                       "满意", "是"]
    assert rows[2][2] == "'@SUM(A1:A9)" and rows[2][10] == ""
    text = data.decode("utf-8-sig")
    assert not PHONE_RE.search(text) and not any(p in text for p in RAW_PHONES)


def test_csv_cover_writes_notes_then_table():
    cover, _ = sitin_summary_sheets(sitin_summary())
    rows = list(csv.reader(io.StringIO(to_csv(cover).decode("utf-8-sig"), newline="")))
    notes = {r[0]: r[1] for r in rows if len(r) == 2}
    assert notes["满意率"] == "85.0%" and notes["按时办结率"] == "—" and notes["季度"] == "第一季度"
    table = rows.index([]) + 1
    assert rows[table] == ["坐诊日期", "活动名称", "是否在季末月中旬", "活动编号"]
    assert rows[table + 1] == ["2026-03-16", "第一季度局长坐诊", "是", "ACT-2026-SI-01"]


def test_csv_patrol_service_list_neutralises_formulas():
    _, items, _ = patrol_report_sheets(patrol_report())
    rows = list(csv.reader(io.StringIO(to_csv(items).decode("utf-8-sig"), newline="")))
    assert rows[0][0] == "序号" and rows[2][1] == "'" + FORMULA_NAME and rows[2][3] == "087****3456"


# --------------------------------------------------------------------------- writer details


def test_writer_sanitises_titles_and_control_characters():
    sheets = [Sheet("a/b:c*?[d]" + "长" * 40, ["名称"], [["公司\x07名称"]]),
              Sheet("重复", ["x"], [[1]]), Sheet("重复", ["x"], [[2]])]
    wb = reopen(to_xlsx(sheets))
    assert wb.sheetnames[0].startswith("a_b_c___d_") and len(wb.sheetnames[0]) == 31
    assert wb.sheetnames[1:] == ["重复", "重复(2)"]
    assert wb.worksheets[0]["A2"].value == "公司名称"


def test_naive_datetimes_are_utc_and_numbers_stay_numbers():
    sheet = Sheet("t", ["时间", "数", "率"], [[datetime(2026, 12, 31, 17, 0), 3, Rate(0.5)]])
    ws = reopen(to_xlsx([sheet])).active
    assert ws["A2"].value == datetime(2027, 1, 1, 1, 0)
    assert ws["B2"].value == 3 and ws["C2"].value == 0.5 and ws["C2"].number_format == "0.0%"
    assert ws.column_dimensions["A"].width >= 16


def test_empty_report_still_opens():
    wb = reopen(to_xlsx(annual_review_sheets({"year": 2026})))
    assert len(wb.sheetnames) == 8 and notes_of(wb["总体情况"])["满意率"] == "—"
    assert reopen(to_xlsx([])).sheetnames == ["Sheet1"]
