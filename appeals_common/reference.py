"""Fixed vocabularies of the programme (codes with their Chinese labels)."""

from __future__ import annotations

CHANNELS: dict[str, str] = {
    "sit_in": "局长坐诊",
    "chain_patrol": "链式巡诊",
    "door_visit": "上门问诊",
    "clinic_point": "问诊点",
    "observation_station": "营商环境观察站",
    "supervisor": "营商环境监督员",
    "service_zone": "优化营商环境服务保障专区",
    "investment_station": "投资服务站点",
    "investment_matrix": "投资建设项目政务服务矩阵",
    "hotline_12345": "12345热线",
    "online": "网上诉求",
    "gov_system": "其他政府系统",
}

# Activities appeals are taken at (附件1 schedule; 问诊点 sessions).
ACTIVITY_KINDS: dict[str, str] = {
    "sit_in": "局长坐诊",
    "chain_patrol": "链式巡诊",
    "door_visit": "上门问诊",
    "clinic_point": "问诊点专场",
}

URGENCIES: dict[str, str] = {"normal": "一般", "urgent": "紧急"}

# 回访 grades, best first; the first three count as satisfied (满意率).
FOLLOWUP_GRADES: dict[str, str] = {
    "very_satisfied": "非常满意",
    "satisfied": "满意",
    "basically_satisfied": "基本满意",
    "unsatisfied": "不满意",
    "very_unsatisfied": "非常不满意",
}
SATISFIED_GRADES = frozenset({"very_satisfied", "satisfied", "basically_satisfied"})

RESPONSE_OUTCOMES: dict[str, str] = {
    "solved": "已解决",
    "explained": "已解释说明",
    "not_solvable": "现行政策下无法解决",
}

REPLY_ACTIONS = ("sign", "return", "extend", "respond")

ROLES = ("bureau_admin", "bureau_staff", "department", "viewer")

# 退单 reasons a department may give (fixed list; text explains the case).
RETURN_REASONS: dict[str, str] = {
    "not_our_duty": "不属于本单位职责",
    "wrong_unit": "应由其他单位承办",
    "insufficient_info": "诉求信息不全，无法办理",
    "duplicate": "重复诉求",
    "other": "其他",
}
