"""The tools of the customer-service dataset, as datagen.py lists and calls them.

The agent's 15 tool schemas (written out as tools.json) and how a call is
validated against them; what each tool is confused with and how a reply names
it; and the tools of other domains, with their names, namespaces, templates
and values, that other domains' conversations list and call.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# the repository's root, for the validator's schema checker (this file runs from its own folder)
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from jsonschema.exceptions import best_match as _jsonschema_best_match  # noqa: E402

from pipeline.lib.conversations import Schemas  # noqa: E402

# --------------------------------------------------------------------------
# Tool schemas
# --------------------------------------------------------------------------

ORDER_ID_RE = r"^ORD-\d{6}$"
SKU_RE = r"^SKU-\d{5}$"
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
EMAIL_RE = r"^\S+@\S+\.\w+$"
POSTAL_RE = r"^\d{5}$"
PHONE_RE = r"^\+?\d{10,15}$"
CODE_RE = r"^[A-Z0-9]{4,16}$"

# Schemas are kept terse on purpose: a tiny model sees all 15 tools in every
# prompt, so patterns/enums carry the format and descriptions stay one line.


def _order_id() -> dict:
    return {"type": "string", "pattern": ORDER_ID_RE}


def _email() -> dict:
    return {"type": "string", "format": "email", "pattern": EMAIL_RE}


def _date() -> dict:
    return {"type": "string", "format": "date", "pattern": DATE_RE}


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}

TOOLS: list[dict] = [
    _tool("check_order_status", "Get the status of an order.", {
        "order_id": _order_id(),
        "include_items": _BOOL,
    }, ["order_id"]),
    _tool("track_shipment", "Track the shipment of an order.", {
        "order_id": _order_id(),
        "include_history": _BOOL,
    }, ["order_id"]),
    _tool("cancel_order", "Cancel an order that has not shipped.", {
        "order_id": _order_id(),
        "reason": {"type": "string", "enum": ["changed_mind", "ordered_by_mistake",
                                              "found_better_price", "delivery_too_slow", "other"]},
    }, ["order_id"]),
    _tool("initiate_return", "Start a return and get a return label.", {
        "order_id": _order_id(),
        "reason": {"type": "string", "enum": ["damaged", "wrong_item", "wrong_size",
                                              "not_as_described", "no_longer_needed"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
    }, ["order_id", "reason"]),
    _tool("submit_refund", "Refund an amount in USD for an order.", {
        "order_id": _order_id(),
        "amount": {"type": "number", "minimum": 0.01, "maximum": 5000},
        "reason": {"type": "string", "enum": ["damaged", "late_delivery", "missing_item",
                                              "price_adjustment", "other"]},
        "refund_method": {"type": "string", "enum": ["original_payment", "store_credit"]},
    }, ["order_id", "amount"]),
    _tool("update_shipping_address", "Change the delivery address of an order.", {
        "order_id": _order_id(),
        "street": _STR,
        "apartment": _STR,
        "city": _STR,
        "postal_code": {"type": "string", "pattern": POSTAL_RE},
    }, ["order_id", "street", "city", "postal_code"]),
    _tool("search_products", "Search the product catalog.", {
        "query": {"type": "string", "minLength": 2},
        "category": {"type": "string", "enum": ["footwear", "jackets", "tents", "backpacks",
                                                "clothing", "accessories"]},
        "max_price": {"type": "number", "minimum": 1, "maximum": 10000},
    }, ["query"]),
    _tool("check_product_availability", "Check stock of a product, optionally near a ZIP code.", {
        "sku": {"type": "string", "pattern": SKU_RE},
        "size": {"type": "string", "enum": ["XS", "S", "M", "L", "XL", "XXL"]},
        "postal_code": {"type": "string", "pattern": POSTAL_RE},
    }, ["sku"]),
    _tool("get_account_details", "Look up a customer account.", {
        "email": _email(),
    }, ["email"]),
    _tool("update_account_email", "Change the email of an account.", {
        "current_email": _email(),
        "new_email": _email(),
    }, ["current_email", "new_email"]),
    _tool("reset_password", "Send a password reset link.", {
        "email": _email(),
        "method": {"type": "string", "enum": ["email", "sms"]},
    }, ["email"]),
    _tool("apply_discount_code", "Apply a discount code to an order.", {
        "order_id": _order_id(),
        "code": {"type": "string", "pattern": CODE_RE},
    }, ["order_id", "code"]),
    _tool("list_recent_orders", "List a customer's recent orders.", {
        "email": _email(),
        "limit": {"type": "integer", "minimum": 1, "maximum": 20},
        "since": _date(),
    }, ["email"]),
    _tool("escalate_to_human", "Hand the case to a human agent.", {
        "summary": {"type": "string", "maxLength": 200},
        "priority": {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
        "order_id": _order_id(),
    }, ["summary"]),
    _tool("schedule_callback", "Book a phone callback.", {
        "phone": {"type": "string", "pattern": PHONE_RE},
        "date": _date(),
        "time_window": {"type": "string", "enum": ["morning", "afternoon", "evening"]},
        "order_id": _order_id(),
    }, ["phone", "date", "time_window"]),
]

TOOL_NAMES: list[str] = [t["function"]["name"] for t in TOOLS]
SCHEMAS: dict[str, dict] = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def validate_call(name: str, args: Any) -> None:
    """Raise if ``args`` does not validate against the schema of tool ``name`` (the validator's own schemas)."""
    err = _jsonschema_best_match(_SCHEMAS.validator(SCHEMAS[name]).iter_errors(args))
    if err is not None:
        raise err


_SCHEMAS = Schemas()


# --------------------------------------------------------------------------
# Other domains and per-conversation tool lists
# --------------------------------------------------------------------------
# An agent that sees the same 15 tools in the same order in every conversation learns a topic, not
# how to read a tool list. So every conversation carries its own `tools`: half the Acme ones the full
# list in its usual order (the deployed agent), the rest a shuffled subset that always holds the
# tools the conversation calls, their neighbours (the tools they are confused with) and sometimes
# tools of other domains. Conversations of other domains (a general assistant, or none) call tools
# the agent never has; some ask for something no listed tool does, or for an Acme tool that is not
# in the list, and the right reply says so instead of calling.

# The tools each Acme tool is confused with (most of a tuned model's wrong tools are these).
NEIGHBOURS = {
    "check_order_status": ["track_shipment", "list_recent_orders"],
    "track_shipment": ["check_order_status"],
    "cancel_order": ["initiate_return", "submit_refund"],
    "initiate_return": ["submit_refund", "cancel_order"],
    "submit_refund": ["initiate_return", "escalate_to_human"],
    "update_shipping_address": ["update_account_email"],
    "search_products": ["check_product_availability"],
    "check_product_availability": ["search_products"],
    "get_account_details": ["list_recent_orders", "update_account_email"],
    "update_account_email": ["get_account_details", "reset_password"],
    "reset_password": ["update_account_email", "get_account_details"],
    "apply_discount_code": ["submit_refund"],
    "list_recent_orders": ["get_account_details", "check_order_status"],
    "escalate_to_human": ["schedule_callback"],
    "schedule_callback": ["escalate_to_human"],
}

# What each Acme tool does, as a reply that names a missing tool puts it.
CAPABILITIES = {
    "check_order_status": "check an order's status",
    "track_shipment": "track a shipment",
    "cancel_order": "cancel an order",
    "initiate_return": "start a return",
    "submit_refund": "issue a refund",
    "update_shipping_address": "change a delivery address",
    "search_products": "search the catalog",
    "check_product_availability": "check stock",
    "get_account_details": "look up an account",
    "update_account_email": "change an account's email",
    "reset_password": "reset a password",
    "apply_discount_code": "apply a discount code",
    "list_recent_orders": "list recent orders",
    "escalate_to_human": "hand the case to a colleague",
    "schedule_callback": "book a callback",
}


def _num(desc: str, **kw) -> dict:
    return {"type": "number", "description": desc, **kw}


def _int(desc: str, **kw) -> dict:
    return {"type": "integer", "description": desc, **kw}


def _s(desc: str, **kw) -> dict:
    return {"type": "string", "description": desc, **kw}


# Other domains' tools: names (one is picked per conversation, so that a call copies its name from
# the list), description, parameters with descriptions (as public function-calling sets write them),
# required, templates, and what the tool does. Template fields: see `datagen._other_slot`.
OTHER_TOOLS: list[dict] = [
    {"names": ["get_current_weather", "weather_now", "fetch_weather"], "does": "get the weather",
     "description": "Get the current weather in a city.",
     "params": {"location": _s("The city, e.g. Denver"), "unit": _s("Temperature unit", enum=["celsius", "fahrenheit"])},
     "required": ["location"],
     "templates": ["What's the weather in {city} right now?", "How warm is it in {city} at the moment?",
                   "Tell me the current weather in {city} in {unit}.", "Is it raining in {city}?",
                   "Current conditions for {city}, please, in {unit}.", "What's it like outside in {city} today?"]},
    {"names": ["convert_currency", "currency_convert", "exchange_money"], "does": "convert currencies",
     "description": "Convert an amount of money from one currency to another.",
     "params": {"amount": _num("Amount to convert"), "from_currency": _s("ISO code, e.g. USD"),
                "to_currency": _s("ISO code, e.g. EUR")},
     "required": ["amount", "from_currency", "to_currency"],
     "templates": ["Convert {amount} {from_currency} to {to_currency}.", "How much is {amount} {from_currency} in {to_currency}?",
                   "I have {amount} {from_currency}; what's that in {to_currency}?",
                   "Change {amount} {from_currency} into {to_currency} for me.", "{amount} {from_currency} to {to_currency}?"]},
    {"names": ["calculate_triangle_area", "triangle_area", "geometry_triangle_area"], "does": "compute a triangle's area",
     "description": "Area of a triangle from its base and height.",
     "params": {"base": _num("Base length"), "height": _num("Height")},
     "required": ["base", "height"],
     "templates": ["What's the area of a triangle with base {base} and height {height}?",
                   "Find the area of a triangle: base {base}, height {height}.",
                   "A triangle has a base of {base} cm and a height of {height} cm. How big is its area?",
                   "Calculate the triangle area for base {base} and height {height}."]},
    {"names": ["get_stock_price", "stock_quote", "fetch_share_price"], "does": "look up stock prices",
     "description": "Latest trading price of a stock.",
     "params": {"ticker": _s("Stock ticker symbol, e.g. AAPL")},
     "required": ["ticker"],
     "templates": ["What is {ticker} trading at?", "Get me the latest price of {ticker}.",
                   "How much is one share of {ticker} right now?", "Stock price for {ticker}, please."]},
    {"names": ["translate_text", "translate", "text_translation"], "does": "translate text",
     "description": "Translate text into another language.",
     "params": {"text": _s("The text to translate"), "target_language": _s("Language to translate into")},
     "required": ["text", "target_language"],
     "templates": ["Translate \"{phrase}\" into {language}.", "How do you say \"{phrase}\" in {language}?",
                   "Please put \"{phrase}\" into {language}.", "What's \"{phrase}\" in {language}?"]},
    {"names": ["find_restaurants", "restaurant_search", "search_restaurants"], "does": "find restaurants",
     "description": "Find restaurants in a city, optionally by cuisine.",
     "params": {"location": _s("City"), "cuisine": _s("Type of food, e.g. Thai")},
     "required": ["location"],
     "templates": ["Find me a {cuisine} restaurant in {city}.", "Where can I eat in {city}?",
                   "Any good {cuisine} places in {city}?", "Restaurants in {city}, please.",
                   "I'm hungry in {city}; what's around?"]},
    {"names": ["get_flight_status", "flight_status", "check_flight"], "does": "check flights",
     "description": "Status of a flight by its number.",
     "params": {"flight_number": _s("Airline code and number, e.g. UA123")},
     "required": ["flight_number"],
     "templates": ["Is flight {flight} on time?", "What's the status of {flight}?",
                   "Has {flight} landed yet?", "Check flight {flight} for me."]},
    {"names": ["calculate_bmi", "bmi_calculator", "body_mass_index"], "does": "compute a BMI",
     "description": "Body mass index from weight and height.",
     "params": {"weight_kg": _num("Weight in kilograms"), "height_cm": _num("Height in centimetres")},
     "required": ["weight_kg", "height_cm"],
     "templates": ["What's my BMI? I weigh {weight} kg and I'm {height} cm tall.",
                   "Calculate BMI for {weight} kg and {height} cm.",
                   "I'm {height} cm and {weight} kg; what's my body mass index?"]},
    {"names": ["compound_interest", "calculate_compound_interest", "interest_calculator"], "does": "compute interest",
     "description": "Value of a deposit with yearly compound interest.",
     "params": {"principal": _num("Initial amount"), "rate": _num("Yearly interest rate as a decimal, e.g. 0.05"),
                "years": _int("Number of years")},
     "required": ["principal", "rate", "years"],
     "templates": ["If I invest {principal} at {rate} yearly for {years} years, what do I end up with?",
                   "Compound interest on {principal}, rate {rate}, {years} years?",
                   "What will {principal} grow to in {years} years at an annual rate of {rate}?"]},
    {"names": ["get_movie_showtimes", "movie_showtimes", "cinema_times"], "does": "find movie showtimes",
     "description": "Showtimes of a movie in a city.",
     "params": {"movie": _s("Movie title"), "location": _s("City")},
     "required": ["movie", "location"],
     "templates": ["When is {movie} playing in {city}?", "Showtimes for {movie} in {city}, please.",
                   "Where can I see {movie} in {city} tonight?"]},
    {"names": ["get_population", "country_population", "population_lookup"], "does": "look up populations",
     "description": "Population of a country, optionally in a given year.",
     "params": {"country": _s("Country name"), "year": _int("Year")},
     "required": ["country"],
     "templates": ["What's the population of {country}?", "How many people lived in {country} in {year}?",
                   "Population of {country} in {year}?", "How many people live in {country}?"]},
    {"names": ["math_gcd", "greatest_common_divisor", "gcd"], "does": "compute a greatest common divisor",
     "description": "Greatest common divisor of two integers.",
     "params": {"a": _int("First integer"), "b": _int("Second integer")},
     "required": ["a", "b"],
     "templates": ["What's the greatest common divisor of {a} and {b}?", "GCD of {a} and {b}?",
                   "Find the highest common factor of {a} and {b}."]},
    {"names": ["search_recipes", "recipe_finder", "find_recipes"], "does": "find recipes",
     "description": "Find recipes with an ingredient, optionally under a time limit.",
     "params": {"ingredient": _s("Main ingredient"), "max_minutes": _int("Longest total time in minutes")},
     "required": ["ingredient"],
     "templates": ["Give me a recipe with {ingredient}.", "What can I cook with {ingredient} in under {minutes} minutes?",
                   "Find recipes that use {ingredient}, {minutes} minutes max.", "Any ideas for dinner with {ingredient}?"]},
    {"names": ["get_distance", "distance_between", "route_distance"], "does": "measure distances",
     "description": "Driving distance between two cities.",
     "params": {"origin": _s("Start city"), "destination": _s("End city"), "unit": _s("Unit", enum=["km", "miles"])},
     "required": ["origin", "destination"],
     "templates": ["How far is it from {city} to {city2}?", "Distance from {city} to {city2} in {dist_unit}?",
                   "How many {dist_unit} is the drive from {city} to {city2}?", "What's the drive from {city} to {city2}?"]},
    {"names": ["book_hotel", "reserve_hotel", "hotel_booking"], "does": "book hotels",
     "description": "Book a hotel room.",
     "params": {"city": _s("City"), "check_in": _s("Date, YYYY-MM-DD", pattern=DATE_RE), "nights": _int("Number of nights", minimum=1)},
     "required": ["city", "check_in", "nights"],
     "templates": ["Book a hotel in {city} from {date} for {nights} nights.", "I need a room in {city}, checking in {date}, {nights} nights.",
                   "Reserve {nights} nights in {city} starting {date}."]},
    {"names": ["get_time_zone", "timezone_lookup", "city_time_zone"], "does": "look up time zones",
     "description": "Time zone of a city.",
     "params": {"city": _s("City name")},
     "required": ["city"],
     "templates": ["What time zone is {city} in?", "Which time zone does {city} use?", "Time zone for {city}?"]},
    {"names": ["calculate_circle_area", "circle_area", "area_of_circle"], "does": "compute a circle's area",
     "description": "Area of a circle from its radius.",
     "params": {"radius": _num("Radius of the circle"), "unit": _s("Unit of length, e.g. cm")},
     "required": ["radius"],
     "templates": ["What's the area of a circle with a radius of {radius}?", "Area of a circle, radius {radius} {length_unit}?",
                   "Find the area of a circle whose radius is {radius} {length_unit}.",
                   "A round table has a radius of {radius}; what is its area?"]},
    {"names": ["calculate_average_speed", "average_speed", "speed_from_distance"], "does": "compute an average speed",
     "description": "Average speed from a distance and the time it took.",
     "params": {"distance_km": _num("Distance in kilometres"), "hours": _num("Time taken in hours")},
     "required": ["distance_km", "hours"],
     "templates": ["I drove {km} km in {hours} hours. What was my average speed?",
                   "Average speed for {km} km covered in {hours} hours?",
                   "A train travels {km} kilometres in {hours} hours; how fast is that on average?"]},
    {"names": ["convert_temperature", "temperature_converter", "temp_convert"], "does": "convert temperatures",
     "description": "Convert a temperature between Celsius, Fahrenheit and Kelvin.",
     "params": {"value": _num("The temperature to convert"),
                "from_unit": _s("Its scale", enum=["celsius", "fahrenheit", "kelvin"]),
                "to_unit": _s("The scale to convert to", enum=["celsius", "fahrenheit", "kelvin"])},
     "required": ["value", "from_unit", "to_unit"],
     "templates": ["Convert {temp} degrees {from_scale} to {to_scale}.", "What is {temp} {from_scale} in {to_scale}?",
                   "{temp} degrees {from_scale}, how much is that in {to_scale}?"]},
    {"names": ["get_team_standings", "league_standings", "team_rank"], "does": "look up league standings",
     "description": "A team's position in its league table for a season.",
     "params": {"team": _s("Team name"), "season": _s("Season, e.g. 2022-23")},
     "required": ["team"],
     "templates": ["Where do the {team} stand in the league?", "What's the {team}'s position in the {season} season?",
                   "How did the {team} finish in {season}?", "League table position of the {team}, please."]},
    {"names": ["get_player_stats", "player_statistics", "athlete_stats"], "does": "look up player statistics",
     "description": "Season statistics of a player.",
     "params": {"player": _s("Player's full name"), "season": _s("Season, e.g. 2022-23")},
     "required": ["player"],
     "templates": ["Show me {player}'s stats.", "How many points did {player} score in {season}?",
                   "Get {player}'s statistics for the {season} season.", "What are {player}'s numbers this season?"]},
    {"names": ["calculate_percentage", "percentage_of", "percent_calculator"], "does": "compute percentages",
     "description": "What percentage one number is of another.",
     "params": {"part": _num("The part"), "whole": _num("The whole")},
     "required": ["part", "whole"],
     "templates": ["What percentage is {part} of {whole}?", "{part} out of {whole} is what percent?",
                   "I scored {part} out of {whole}; what's that as a percentage?"]},
    {"names": ["define_word", "dictionary_lookup", "word_definition"], "does": "define words",
     "description": "Dictionary definition of an English word.",
     "params": {"word": _s("The word to define")},
     "required": ["word"],
     "templates": ["What does \"{word}\" mean?", "Define the word {word}.", "Give me the definition of {word}.",
                   "What's the meaning of {word}?"]},
    {"names": ["count_calories", "calorie_lookup", "food_calories"], "does": "count calories",
     "description": "Calories in a weight of a food.",
     "params": {"food": _s("The food"), "grams": _num("Weight in grams")},
     "required": ["food", "grams"],
     "templates": ["How many calories are in {grams} g of {food}?", "Calories in {grams} grams of {food}?",
                   "I ate {grams} grams of {food}. How many calories is that?"]},
    {"names": ["get_public_holidays", "holiday_calendar", "list_holidays"], "does": "list public holidays",
     "description": "Public holidays of a country in a year.",
     "params": {"country": _s("Country name"), "year": _int("Year")},
     "required": ["country", "year"],
     "templates": ["What are the public holidays in {country} in {year}?", "List {country}'s holidays for {year}.",
                   "Which days are national holidays in {country} in {year}?"]},
]
# A namespace per tool: some conversations list a tool as `namespace.name`, as many APIs name them, so that a call
# copies the listed name whole rather than a name it remembers.
OTHER_NAMESPACES = {
    "get_current_weather": "weather", "convert_currency": "finance", "calculate_triangle_area": "geometry",
    "get_stock_price": "stocks", "translate_text": "language", "find_restaurants": "dining", "get_flight_status": "flights",
    "calculate_bmi": "health", "compound_interest": "finance", "get_movie_showtimes": "cinema", "get_population": "census",
    "math_gcd": "math", "search_recipes": "cooking", "get_distance": "maps", "book_hotel": "hotels", "get_time_zone": "clock",
    "calculate_circle_area": "geometry", "calculate_average_speed": "physics", "convert_temperature": "units",
    "get_team_standings": "sports", "get_player_stats": "sports", "calculate_percentage": "math", "define_word": "dictionary",
    "count_calories": "nutrition", "get_public_holidays": "calendar",
}

OTHER_VALUES = {
    "from_currency": ["USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "MXN", "INR", "SEK"],
    "ticker": ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOGL", "META", "NFLX", "IBM", "ORCL", "INTC", "AMD"],
    "phrase": ["good morning", "where is the station", "thank you very much", "I am lost", "how much is this",
               "see you tomorrow", "the bill, please", "happy birthday", "I love hiking", "is it far"],
    "language": ["French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Korean", "Dutch"],
    "cuisine": ["Thai", "Italian", "Mexican", "Indian", "Japanese", "Greek", "Korean", "vegan", "Ethiopian"],
    "movie": ["Dune", "Inception", "The Matrix", "Oppenheimer", "Barbie", "Arrival", "Up", "Jaws", "Heat", "Coco"],
    "country": ["France", "Brazil", "Japan", "Kenya", "Canada", "India", "Norway", "Peru", "Vietnam", "Egypt"],
    "ingredient": ["chickpeas", "salmon", "spinach", "tofu", "mushrooms", "lentils", "eggs", "chicken", "pumpkin"],
    "unit": ["celsius", "fahrenheit"],
    "dist_unit": ["km", "miles"],
    "length_unit": ["cm", "m", "inches", "mm"],
    "from_scale": ["celsius", "fahrenheit", "kelvin"],
    "team": ["Boston Celtics", "Chicago Bulls", "Arsenal", "Real Madrid", "Green Bay Packers", "New York Yankees",
             "Toronto Maple Leafs", "Bayern Munich", "Denver Nuggets", "Liverpool"],
    "season": ["2021-22", "2022-23", "2023-24", "2019-20"],
    "player": ["Nikola Jokic", "Lionel Messi", "Serena Williams", "Patrick Mahomes", "Erling Haaland", "Stephen Curry",
               "Shohei Ohtani", "Connor McDavid", "Megan Rapinoe", "LeBron James"],
    "word": ["serendipity", "ephemeral", "ubiquitous", "pragmatic", "meticulous", "resilient", "candid", "eloquent"],
    "food": ["rice", "banana", "cheddar", "almonds", "oatmeal", "avocado", "salmon", "bread", "apple", "pasta"],
}

# Whole-number fields of other-domain templates: [low, high).
OTHER_NUMBERS = {"radius": (1, 80), "km": (20, 900), "hours": (1, 12), "temp": (-20, 120), "part": (1, 90),
                 "whole": (100, 400), "grams": (20, 500)}

# A field's argument name per tool, where it differs from the field name.
OTHER_FIELD_ARGS = {"city2": "destination", "flight": "flight_number",
                    "weight": "weight_kg", "height": "height_cm", "minutes": "max_minutes", "dist_unit": "unit",
                    "date": "check_in", "language": "target_language", "phrase": "text", "length_unit": "unit",
                    "km": "distance_km", "temp": "value", "from_scale": "from_unit", "to_scale": "to_unit"}


def other_tool_schema(tool: dict, name: str) -> dict:
    """The OpenAI tools entry of an other-domain tool under one of its names."""
    return {"type": "function", "function": {
        "name": name, "description": tool["description"],
        "parameters": {"type": "object", "properties": tool["params"], "required": tool["required"]}}}


def namespaced(tool: dict, name: str) -> str:
    return f"{OTHER_NAMESPACES[tool['names'][0]]}.{name}"


# Every name an other-domain tool is listed under, plain or namespaced
OTHER_BY_NAME = {full: t for t in OTHER_TOOLS for n in t["names"] for full in (n, namespaced(t, n))}
for _full, _t in OTHER_BY_NAME.items():
    SCHEMAS[_full] = other_tool_schema(_t, _full)["function"]["parameters"]

TOOL_BY_NAME = {t["function"]["name"]: t for t in TOOLS}
# Off-topic questions that an other-domain tool would answer: never asked beside that tool.
REFUSAL_CONFLICTS = {
    "weather": {"get_current_weather"}, "travel": {"book_hotel", "get_flight_status", "get_distance"},
    "finance": {"get_stock_price", "convert_currency", "compound_interest"}, "creative": {"translate_text"},
    "personal": {"search_recipes", "get_movie_showtimes", "find_restaurants"},
    "homework": {"math_gcd", "calculate_triangle_area", "calculate_circle_area", "calculate_percentage",
                 "calculate_average_speed", "define_word"},
    "general": {"get_population", "get_distance", "get_time_zone", "get_team_standings", "get_player_stats"},
    "medical": {"calculate_bmi", "count_calories"},
}

# Other-domain tools a request is easily mistaken for (shared argument names or topic): a request for
# one beside only these is the near miss that teaches a model to read the list rather than guess.
OTHER_NEIGHBOURS = {
    "get_current_weather": ["get_time_zone", "get_distance", "convert_temperature"],
    "convert_currency": ["get_stock_price", "compound_interest"],
    "calculate_triangle_area": ["calculate_bmi", "math_gcd", "calculate_circle_area"],
    "get_stock_price": ["convert_currency", "compound_interest"],
    "translate_text": ["get_time_zone", "get_population"],
    "find_restaurants": ["search_recipes", "book_hotel"],
    "get_flight_status": ["book_hotel", "get_distance"],
    "calculate_bmi": ["calculate_triangle_area", "compound_interest"],
    "compound_interest": ["convert_currency", "get_stock_price"],
    "get_movie_showtimes": ["find_restaurants", "book_hotel"],
    "get_population": ["get_time_zone", "get_distance"],
    "math_gcd": ["calculate_triangle_area", "compound_interest"],
    "search_recipes": ["find_restaurants", "calculate_bmi"],
    "get_distance": ["get_flight_status", "get_time_zone"],
    "book_hotel": ["get_flight_status", "find_restaurants"],
    "get_time_zone": ["get_current_weather", "get_population", "get_public_holidays"],
    "calculate_circle_area": ["calculate_triangle_area", "calculate_percentage"],
    "calculate_average_speed": ["get_distance", "get_flight_status"],
    "convert_temperature": ["get_current_weather", "convert_currency"],
    "get_team_standings": ["get_player_stats", "get_stock_price"],
    "get_player_stats": ["get_team_standings", "get_population"],
    "calculate_percentage": ["compound_interest", "math_gcd", "calculate_circle_area"],
    "define_word": ["translate_text", "get_population"],
    "count_calories": ["search_recipes", "calculate_bmi"],
    "get_public_holidays": ["get_time_zone", "get_population"],
}
