"""The four synthetic tool-use domains: a shop's orders, a library catalogue, a calendar, a train timetable.

Each domain is data plus typed functions over a SQLite connection:
- `tables`: name -> [(column, SQL type)] (the state; also the schema an LLM generator fills in),
- `tools`: typed Python functions whose first parameter `db` is bound by the runtime,
- `populate(rng, lang)`: a random state (rows per table) with names in the task's language,
- `goals`: the task types, each `goal_schema` (JSON schema), `draw(rng, state, lang)`, `instruction(goal,
  lang)`, `criterion(goal, state)` -> the pass check, derived from the goal and the initial state alone,
  and `solve(call, goal, lang)` -> the final answer: the scripted reference solver, which sees the world
  only through the tools (`call(name, **args)` returns what the model would read, parsed).

A criterion raises `Unsolvable` when the goal has no solution in the state and `Ambiguous` when it has
several (two equally cheap trains, two pending orders of the same item); the solver raises the same
when the tools show it. The solvability filter (`envs.py`) counts both and drops the task.

Six languages (en ko es de ja vi): the instruction and the names in the state (cities, items, titles)
are in the task's language; ids, dates and times are language-neutral.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from typing import Callable

from ..tasks.tool import CITIES

LANGS = ("en", "ko", "es", "de", "ja", "vi")
_L = {lang: i for i, lang in enumerate(LANGS)}


class Unsolvable(Exception):
    """No sequence of tool calls can meet the goal."""


class Ambiguous(Exception):
    """More than one answer meets the goal as stated."""


def _rows(db: sqlite3.Connection, sql: str, params=()) -> list[dict]:
    cur = db.execute(sql, params)
    names = [c[0] for c in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


DONE = {"en": "Done: {x}.", "ko": "완료: {x}.", "es": "Hecho: {x}.", "de": "Erledigt: {x}.", "ja": "完了: {x}。",
        "vi": "Xong: {x}."}
PEOPLE = {"en": ["Alice", "Ben", "Chloe", "David", "Emma", "Frank", "Grace"],
          "ko": ["김민준", "이서연", "박지호", "최수아", "정도윤", "강하은", "조예준"],
          "es": ["Lucía", "Mateo", "Sofía", "Hugo", "Martina", "Pablo", "Elena"],
          "de": ["Lukas", "Mia", "Jonas", "Hannah", "Felix", "Lea", "Paul"],
          "ja": ["佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本"],
          "vi": ["Nguyễn An", "Trần Bình", "Lê Chi", "Phạm Dũng", "Hoàng Giang", "Vũ Hà", "Đặng Khoa"]}


@dataclass
class Goal:
    name: str
    goal_schema: dict
    draw: Callable  # (rng, state, lang) -> goal
    instruction: dict  # lang -> template over the goal's fields
    criterion: Callable  # (goal, state) -> check
    solve: Callable  # (call, goal, lang) -> answer


@dataclass
class Domain:
    name: str
    tables: dict[str, list[tuple[str, str]]]
    tools: list[Callable]
    populate: Callable  # (rng, lang) -> {table: [[...], ...]}
    goals: list[Goal]

    def goal(self, name: str) -> Goal:
        for g in self.goals:
            if g.name == name:
                return g
        raise KeyError(f"domain {self.name} has no task type {name!r}")


def _object_schema(**props) -> dict:
    """JSON schema of a goal: these fields, all required, no others."""
    return {"type": "object", "properties": {k: {"type": t} for k, t in props.items()},
            "required": list(props), "additionalProperties": False}


def _state_check(table: str, columns: str, order: str, rows: list) -> dict:
    """Pass when the table's rows (those columns, in that order) are exactly `rows`: the intended change
    happened and nothing else did."""
    return {"sql": f"SELECT {columns} FROM {table} ORDER BY {order}", "expected": [list(r) for r in rows]}


# ------------------------------------------------------------------------------------------------ shop
ITEMS = [("laptop", "노트북", "portátil", "Laptop", "ノートパソコン", "máy tính xách tay"),
         ("headphones", "헤드폰", "auriculares", "Kopfhörer", "ヘッドホン", "tai nghe"),
         ("coffee beans", "원두", "café en grano", "Kaffeebohnen", "コーヒー豆", "hạt cà phê"),
         ("backpack", "배낭", "mochila", "Rucksack", "リュック", "ba lô"),
         ("desk lamp", "책상 램프", "lámpara de escritorio", "Schreibtischlampe", "デスクライト", "đèn bàn"),
         ("running shoes", "러닝화", "zapatillas", "Laufschuhe", "ランニングシューズ", "giày chạy bộ")]
STATUSES = ("pending", "shipped", "delivered", "cancelled")


def find_orders(db: sqlite3.Connection, customer: str, status: str = "") -> list[dict]:
    """List a customer's orders, optionally only those with one status.

    Args:
        customer: the customer's name, exactly as written in the request
        status: pending, shipped, delivered or cancelled; empty for all
    """
    if status and status not in STATUSES:
        raise ValueError(f"status must be one of {list(STATUSES)} or empty")
    sql = "SELECT * FROM orders WHERE customer = ?" + (" AND status = ?" if status else "") + " ORDER BY id"
    return _rows(db, sql, (customer, status) if status else (customer,))


def cancel_order(db: sqlite3.Connection, order_id: str) -> dict:
    """Cancel an order that has not shipped yet.

    Args:
        order_id: the order's id, e.g. "A-1042"
    """
    rows = _rows(db, "SELECT * FROM orders WHERE id = ?", (order_id,))
    if not rows:
        raise KeyError(f"no order {order_id!r}")
    if rows[0]["status"] != "pending":
        raise ValueError(f"order {order_id} is {rows[0]['status']}: only pending orders can be cancelled")
    with db:
        db.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (order_id,))
    return {"id": order_id, "status": "cancelled"}


def _shop_state(rng: random.Random, lang: str) -> dict:
    people = rng.sample(PEOPLE[lang], 4)
    ids = rng.sample(range(1000, 9999), rng.randint(10, 16))
    return {"orders": [[f"A-{i}", rng.choice(people), rng.choice(ITEMS)[_L[lang]], rng.randint(1, 3),
                        rng.choice([9.5, 12.0, 25.0, 49.9, 120.0, 899.0]), rng.choice(STATUSES)] for i in ids]}


def _pending(state, customer, item):
    return [r for r in state["orders"] if r[1] == customer and r[2] == item and r[5] == "pending"]


def _cancel_draw(rng, state, lang):
    r = rng.choice([r for r in state["orders"] if r[5] == "pending"] or state["orders"])
    return {"customer": r[1], "item": r[2]}


def _cancel_criterion(goal, state):
    hits = _pending(state, goal["customer"], goal["item"])
    if not hits:
        raise Unsolvable(f"{goal['customer']} has no pending order of {goal['item']}")
    if len(hits) > 1:
        raise Ambiguous(f"{goal['customer']} has {len(hits)} pending orders of {goal['item']}")
    after = [r[:5] + ["cancelled" if r[0] == hits[0][0] else r[5]] for r in state["orders"]]
    return {"state": [_state_check("orders", "id, status", "id", sorted([r[0], r[5]] for r in after))]}


def _cancel_solve(call, goal, lang):
    hits = [o for o in call("find_orders", customer=goal["customer"], status="pending") if o["item"] == goal["item"]]
    if len(hits) != 1:
        raise (Ambiguous if hits else Unsolvable)(f"{len(hits)} pending orders match")
    call("cancel_order", order_id=hits[0]["id"])
    return DONE[lang].format(x=hits[0]["id"])


def _spent_draw(rng, state, lang):
    return {"customer": rng.choice(state["orders"])[1]}


def _spent_criterion(goal, state):
    total = round(sum(r[3] * r[4] for r in state["orders"] if r[1] == goal["customer"] and r[5] == "delivered"), 2)
    unchanged = sorted([r[0], r[5]] for r in state["orders"])
    return {"state": [_state_check("orders", "id, status", "id", unchanged)], "answer": {"numbers": [total]}}


def _spent_solve(call, goal, lang):
    orders = call("find_orders", customer=goal["customer"], status="delivered")
    return DONE[lang].format(x=f"{round(sum(o['quantity'] * o['unit_price'] for o in orders), 2):g}")


SHOP = Domain(
    "shop", {"orders": [("id", "TEXT"), ("customer", "TEXT"), ("item", "TEXT"), ("quantity", "INTEGER"),
                        ("unit_price", "REAL"), ("status", "TEXT")]},
    [find_orders, cancel_order], _shop_state,
    [Goal("cancel", _object_schema(customer="string", item="string"), _cancel_draw, {
        "en": "Please cancel {customer}'s pending order of {item}.",
        "ko": "{customer} 고객의 대기 중인 {item} 주문을 취소해 주세요.",
        "es": "Cancela el pedido pendiente de {item} de {customer}, por favor.",
        "de": "Bitte storniere die offene Bestellung von {customer} für {item}.",
        "ja": "{customer}さんの保留中の{item}の注文をキャンセルしてください。",
        "vi": "Hãy hủy đơn hàng {item} đang chờ xử lý của {customer}."}, _cancel_criterion, _cancel_solve),
     Goal("spent", _object_schema(customer="string"), _spent_draw, {
         "en": "How much has {customer} spent in total on delivered orders (quantity × unit price)?",
         "ko": "{customer} 고객이 배송 완료된 주문에 쓴 총액(수량 × 단가)은 얼마인가요?",
         "es": "¿Cuánto ha gastado {customer} en total en pedidos entregados (cantidad × precio unitario)?",
         "de": "Wie viel hat {customer} insgesamt für gelieferte Bestellungen ausgegeben (Menge × Stückpreis)?",
         "ja": "{customer}さんが配達済みの注文に使った合計金額（数量×単価）はいくらですか？",
         "vi": "{customer} đã chi tổng cộng bao nhiêu cho các đơn hàng đã giao (số lượng × đơn giá)?"},
          _spent_criterion, _spent_solve)])

# --------------------------------------------------------------------------------------------- library
AUTHORS = ["Han Kang", "Haruki Murakami", "Isabel Allende", "Thomas Mann", "Nguyễn Du", "Ursula K. Le Guin",
           "Gabriel García Márquez", "Yoko Ogawa"]
WORDS = {"en": ["River", "Night", "Garden", "Letters", "Mirror", "Winter", "Harbor", "Silence"],
         "ko": ["강", "밤", "정원", "편지", "거울", "겨울", "항구", "침묵"],
         "es": ["Río", "Noche", "Jardín", "Cartas", "Espejo", "Invierno", "Puerto", "Silencio"],
         "de": ["Fluss", "Nacht", "Garten", "Briefe", "Spiegel", "Winter", "Hafen", "Stille"],
         "ja": ["川", "夜", "庭", "手紙", "鏡", "冬", "港", "沈黙"],
         "vi": ["Sông", "Đêm", "Vườn", "Thư", "Gương", "Mùa đông", "Bến cảng", "Im lặng"]}


def search_books(db: sqlite3.Connection, author: str = "", title: str = "") -> list[dict]:
    """Search the library catalogue by author and/or words of the title.

    Args:
        author: the author's full name (exact), or empty
        title: a word or phrase of the title, or empty
    """
    return _rows(db, "SELECT * FROM books WHERE (? = '' OR author = ?) AND instr(title, ?) > 0 ORDER BY id",
                 (author, author, title))


def borrow_book(db: sqlite3.Connection, book_id: str, member: str) -> dict:
    """Lend a book to a library member (needs a free copy).

    Args:
        book_id: the book's id, e.g. "B-17"
        member: the member's name
    """
    rows = _rows(db, "SELECT * FROM books WHERE id = ?", (book_id,))
    if not rows:
        raise KeyError(f"no book {book_id!r}")
    if rows[0]["copies"] < 1:
        raise ValueError(f"no free copy of {book_id}")
    with db:
        db.execute("UPDATE books SET copies = copies - 1 WHERE id = ?", (book_id,))
        db.execute("INSERT INTO loans VALUES (?, ?)", (book_id, member))
    return {"book_id": book_id, "member": member, "copies_left": rows[0]["copies"] - 1}


def _library_state(rng, lang):
    titles = [f"{a} {b}" if lang not in ("ja", "ko") else f"{a}の{b}" if lang == "ja" else f"{a}의 {b}"
              for a in WORDS[lang] for b in WORDS[lang] if a != b]
    books = [[f"B-{i}", t, rng.choice(AUTHORS), rng.randint(1960, 2024), rng.choice([0, 1, 1, 2, 3])]
             for i, t in zip(rng.sample(range(10, 99), 14), rng.sample(titles, 14))]
    loans = [[b[0], rng.choice(PEOPLE[lang])] for b in rng.sample(books, 3)]
    return {"books": books, "loans": loans}


def _borrow_draw(rng, state, lang):
    b = rng.choice(state["books"])
    return {"author": b[2], "year": b[3], "member": rng.choice(PEOPLE[lang])}


def _borrow_criterion(goal, state):
    hits = [b for b in state["books"] if b[2] == goal["author"] and b[3] == goal["year"]]
    if len(hits) != 1:
        raise (Ambiguous if hits else Unsolvable)(f"{len(hits)} books by {goal['author']} from {goal['year']}")
    loans = sorted(state["loans"] + [[hits[0][0], goal["member"]]])
    copies = sorted([b[0], b[4] - (b[0] == hits[0][0])] for b in state["books"])
    return {"state": [_state_check("loans", "book_id, member", "book_id, member", loans),
                      _state_check("books", "id, copies", "id", copies)]}


def _borrow_solve(call, goal, lang):
    hits = [b for b in call("search_books", author=goal["author"]) if b["year"] == goal["year"]]
    if len(hits) != 1:
        raise (Ambiguous if hits else Unsolvable)(f"{len(hits)} books match")
    call("borrow_book", book_id=hits[0]["id"], member=goal["member"])
    return DONE[lang].format(x=f"{hits[0]['id']} → {goal['member']}")


LIBRARY = Domain(
    "library", {"books": [("id", "TEXT"), ("title", "TEXT"), ("author", "TEXT"), ("year", "INTEGER"),
                          ("copies", "INTEGER")], "loans": [("book_id", "TEXT"), ("member", "TEXT")]},
    [search_books, borrow_book], _library_state,
    [Goal("borrow", _object_schema(author="string", year="integer", member="string"), _borrow_draw, {
        "en": "Lend the book by {author} published in {year} to {member}.",
        "ko": "{author}이(가) {year}년에 낸 책을 {member}님에게 대출해 주세요.",
        "es": "Presta a {member} el libro de {author} publicado en {year}.",
        "de": "Leihe {member} das Buch von {author} aus dem Jahr {year} aus.",
        "ja": "{author}が{year}年に出版した本を{member}さんに貸し出してください。",
        "vi": "Hãy cho {member} mượn cuốn sách của {author} xuất bản năm {year}."},
          _borrow_criterion, _borrow_solve)])

# -------------------------------------------------------------------------------------------- calendar
MEETINGS = {"en": ["Team sync", "Design review", "1:1", "Budget planning", "Customer call"],
            "ko": ["팀 회의", "디자인 리뷰", "1:1 면담", "예산 계획", "고객 통화"],
            "es": ["Reunión de equipo", "Revisión de diseño", "Uno a uno", "Presupuesto", "Llamada con cliente"],
            "de": ["Team-Sync", "Design-Review", "Einzelgespräch", "Budgetplanung", "Kundengespräch"],
            "ja": ["チーム定例", "デザインレビュー", "1on1", "予算計画", "顧客との電話"],
            "vi": ["Họp nhóm", "Duyệt thiết kế", "Gặp riêng", "Lập ngân sách", "Gọi khách hàng"]}
DAY_START, DAY_END = 9, 18  # working hours [9, 18)


def list_events(db: sqlite3.Connection, date: str) -> list[dict]:
    """List the calendar's events on one day, by start time.

    Args:
        date: the day as YYYY-MM-DD
    """
    return _rows(db, "SELECT * FROM events WHERE date = ? ORDER BY start_hour", (date,))


def add_event(db: sqlite3.Connection, date: str, start_hour: int, end_hour: int, title: str) -> dict:
    """Add an event; it must not overlap another event that day.

    Args:
        date: the day as YYYY-MM-DD
        start_hour: the starting hour, 0-23
        end_hour: the ending hour (exclusive), after start_hour
        title: the event's title
    """
    if not 0 <= start_hour < end_hour <= 24:
        raise ValueError("hours must satisfy 0 <= start_hour < end_hour <= 24")
    clash = _rows(db, "SELECT * FROM events WHERE date = ? AND start_hour < ? AND end_hour > ?",
                  (date, end_hour, start_hour))
    if clash:
        raise ValueError(f"overlaps {clash[0]['title']!r} ({clash[0]['start_hour']}-{clash[0]['end_hour']})")
    with db:
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (date, start_hour, end_hour, title))
    return {"date": date, "start_hour": start_hour, "end_hour": end_hour, "title": title}


def _calendar_state(rng, lang):
    events = []
    for day in rng.sample(range(1, 29), 3):
        h = DAY_START + rng.randint(0, 2)
        while h < DAY_END - 1 and len(events) < 12:
            d = rng.randint(1, 3)
            events.append([f"2026-03-{day:02d}", h, min(h + d, DAY_END), rng.choice(MEETINGS[lang])])
            h += d + rng.choice([0, 0, 1, 2])
    return {"events": events}


def _free_slot(busy: list[tuple[int, int]], hours: int) -> int | None:
    for start in range(DAY_START, DAY_END - hours + 1):
        if all(e <= start or s >= start + hours for s, e in busy):
            return start
    return None


def _schedule_draw(rng, state, lang):
    return {"date": rng.choice(state["events"])[0], "hours": rng.randint(1, 3), "title": rng.choice(MEETINGS[lang])}


def _schedule_criterion(goal, state):
    start = _free_slot([(e[1], e[2]) for e in state["events"] if e[0] == goal["date"]], goal["hours"])
    if start is None:
        raise Unsolvable(f"no free {goal['hours']}-hour slot on {goal['date']}")
    after = sorted(state["events"] + [[goal["date"], start, start + goal["hours"], goal["title"]]])
    return {"state": [_state_check("events", "date, start_hour, end_hour, title", "date, start_hour, title", after)]}


def _schedule_solve(call, goal, lang):
    start = _free_slot([(e["start_hour"], e["end_hour"]) for e in call("list_events", date=goal["date"])],
                       goal["hours"])
    if start is None:
        raise Unsolvable("no free slot")
    call("add_event", date=goal["date"], start_hour=start, end_hour=start + goal["hours"], title=goal["title"])
    return DONE[lang].format(x=f"{goal['date']} {start}:00-{start + goal['hours']}:00")


CALENDAR = Domain(
    "calendar", {"events": [("date", "TEXT"), ("start_hour", "INTEGER"), ("end_hour", "INTEGER"), ("title", "TEXT")]},
    [list_events, add_event], _calendar_state,
    [Goal("schedule", _object_schema(date="string", hours="integer", title="string"), _schedule_draw, {
        "en": "Put a {hours}-hour '{title}' on my calendar on {date}, at the earliest free time between 9:00 and 18:00.",
        "ko": "{date}에 9시에서 18시 사이 가장 이른 빈 시간에 {hours}시간짜리 '{title}' 일정을 넣어 주세요.",
        "es": "Añade '{title}' de {hours} h a mi calendario el {date}, lo antes posible entre las 9:00 y las 18:00.",
        "de": "Trage am {date} '{title}' ({hours} Std.) zur frühesten freien Zeit zwischen 9 und 18 Uhr ein.",
        "ja": "{date}の9時から18時の間で最も早い空き時間に、{hours}時間の「{title}」を入れてください。",
        "vi": "Thêm '{title}' dài {hours} giờ vào lịch ngày {date}, vào giờ trống sớm nhất từ 9:00 đến 18:00."},
          _schedule_criterion, _schedule_solve)])

# ---------------------------------------------------------------------------------------------- travel


def find_trains(db: sqlite3.Connection, origin: str, destination: str) -> list[dict]:
    """List the trains from one city to another with departure, arrival (HH:MM) and price.

    Args:
        origin: the departure city
        destination: the arrival city
    """
    return _rows(db, "SELECT * FROM trains WHERE origin = ? AND destination = ? ORDER BY depart",
                 (origin, destination))


def book_ticket(db: sqlite3.Connection, train_id: str, passenger: str) -> dict:
    """Book a seat on a train for a passenger.

    Args:
        train_id: the train's id, e.g. "T-305"
        passenger: the passenger's name
    """
    if not _rows(db, "SELECT id FROM trains WHERE id = ?", (train_id,)):
        raise KeyError(f"no train {train_id!r}")
    with db:
        db.execute("INSERT INTO bookings VALUES (?, ?)", (train_id, passenger))
    return {"train_id": train_id, "passenger": passenger, "status": "booked"}


def _travel_state(rng, lang):
    cities = [c[_L[lang]] for c in rng.sample(CITIES, 4)]
    trains = []
    for i in rng.sample(range(100, 999), 14):
        a, b = rng.sample(cities, 2)
        dep = rng.randint(6 * 4, 20 * 4) * 15
        arr = dep + rng.randint(4, 20) * 15
        trains.append([f"T-{i}", a, b, f"{dep // 60:02d}:{dep % 60:02d}", f"{arr // 60 % 24:02d}:{arr % 60:02d}",
                       rng.randint(3, 20) * 5])
    return {"trains": trains, "bookings": []}


def _cheapest(trains: list, deadline: str) -> list:
    ok = [t for t in trains if t[1] <= deadline and t[1] >= t[0]]  # (depart, arrive, price, id); same-day arrival
    best = min((t[2] for t in ok), default=None)
    return [t for t in ok if t[2] == best]


def _book_draw(rng, state, lang):
    t = rng.choice(state["trains"])
    late = int(t[4][:2]) * 60 + int(t[4][3:]) + rng.choice([0, 30, 60, 120])
    return {"origin": t[1], "destination": t[2], "deadline": f"{min(late, 1439) // 60:02d}:{min(late, 1439) % 60:02d}",
            "passenger": rng.choice(PEOPLE[lang])}


def _book_criterion(goal, state):
    route = [(t[3], t[4], t[5], t[0]) for t in state["trains"] if t[1] == goal["origin"] and t[2] == goal["destination"]]
    best = _cheapest(route, goal["deadline"])
    if len(best) != 1:
        raise (Ambiguous if best else Unsolvable)(f"{len(best)} cheapest trains arrive by {goal['deadline']}")
    return {"state": [_state_check("bookings", "train_id, passenger", "train_id",
                                   sorted(state["bookings"] + [[best[0][3], goal["passenger"]]]))]}


def _book_solve(call, goal, lang):
    trains = call("find_trains", origin=goal["origin"], destination=goal["destination"])
    best = _cheapest([(t["depart"], t["arrive"], t["price"], t["id"]) for t in trains], goal["deadline"])
    if len(best) != 1:
        raise (Ambiguous if best else Unsolvable)(f"{len(best)} cheapest trains")
    call("book_ticket", train_id=best[0][3], passenger=goal["passenger"])
    return DONE[lang].format(x=f"{best[0][3]} ({best[0][0]}-{best[0][1]}, {best[0][2]})")


TRAVEL = Domain(
    "travel", {"trains": [("id", "TEXT"), ("origin", "TEXT"), ("destination", "TEXT"), ("depart", "TEXT"),
                          ("arrive", "TEXT"), ("price", "INTEGER")],
               "bookings": [("train_id", "TEXT"), ("passenger", "TEXT")]},
    [find_trains, book_ticket], _travel_state,
    [Goal("book", _object_schema(origin="string", destination="string", deadline="string", passenger="string"), _book_draw, {
        "en": "Book {passenger} on the cheapest train from {origin} to {destination} that arrives by {deadline}.",
        "ko": "{origin}에서 {destination}까지 {deadline}까지 도착하는 가장 싼 기차를 {passenger}님 이름으로 예약해 주세요.",
        "es": "Reserva para {passenger} el tren más barato de {origin} a {destination} que llegue antes de las {deadline}.",
        "de": "Buche für {passenger} den günstigsten Zug von {origin} nach {destination}, der bis {deadline} ankommt.",
        "ja": "{origin}から{destination}へ{deadline}までに着く一番安い列車を{passenger}さんの名前で予約してください。",
        "vi": "Đặt cho {passenger} chuyến tàu rẻ nhất từ {origin} đến {destination} đến nơi trước {deadline}."},
          _book_criterion, _book_solve)])

DOMAINS: dict[str, Domain] = {d.name: d for d in (SHOP, LIBRARY, CALENDAR, TRAVEL)}
