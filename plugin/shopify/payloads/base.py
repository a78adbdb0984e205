"""What every webhook schema is built from: the bounds of plausible values, the field types that enforce them
(timestamps, Shopify ids, storable text, money, counts) and `PayloadSchema`, which loads into a dataclass."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from plugin.clock import ClockError, parse_instant
from plugin.shopify.ids import gid_number

# The span of plausible store times: a timestamp outside it is hostile or broken, and arithmetic on it
# (a deadline 48 hours later) would overflow. Shopify was founded in 2006.
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2999, 12, 31, tzinfo=UTC)
MAX_ID = 2**63 - 1  # Shopify ids are 64-bit signed integers (BigInteger columns)
MAX_MONEY = Decimal(10) ** 12  # Money columns are Numeric(14, 2)
MAX_INT = 2**31 - 1  # Integer columns


class _Checked:
    """marshmallow 4 wraps a field's validators in a new `validate.And` for every value it loads, even for
    a field with none: a seventh of the time an order body takes to load. A field without validators
    skips that, and one with a single `Validator` (which raises, as And would, with its one message) calls
    it; any other is checked as marshmallow does."""

    def _validate(self, value) -> None:
        validators = self.validators
        if len(validators) == 1 and isinstance(validators[0], validate.Validator):
            validators[0](value)
        elif validators:
            super()._validate(value)


class Nested(_Checked, fields.Nested):
    pass


class List(_Checked, fields.List):
    pass


class _Decimal(_Checked, fields.Decimal):
    pass


class _Integer(_Checked, fields.Integer):
    pass


class Instant(_Checked, fields.Field):
    """An ISO 8601 timestamp as Shopify writes it (offsets, `Z`, or a space separator) → aware UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("Not a timestamp.")
        try:
            instant = parse_instant(value)
        except ClockError as error:
            raise ValidationError(str(error)) from None
        except OverflowError:  # year 1 with a positive offset, and the like
            raise ValidationError("Not a timestamp.") from None
        if not EARLIEST <= instant <= LATEST:
            raise ValidationError("Timestamp out of range.")
        return instant


class ShopifyId(_Checked, fields.Field):
    """A Shopify id given as a number, a numeric string, or a GraphQL gid (`gid://shopify/Customer/1`)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Not an id.")
        if isinstance(value, str) and not value.isascii():
            raise ValidationError("Not a Shopify id.")  # int() reads "²" or "١٢" as digits, or fails on them
        try:
            number = gid_number(value) if isinstance(value, int | str) else None
        except ValueError:  # more digits than int() reads
            number = None
        if number is None or not 0 < number <= MAX_ID:
            raise ValidationError("Not a Shopify id.")
        return number


class Text(_Checked, fields.String):
    """A string we store: within its column's length, without NUL or lone surrogates (which PostgreSQL
    refuses, and which would fail the delivery instead of quarantining it)."""

    def __init__(self, *args, max_length: int = 255, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_length = max_length

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > self.max_length:
            raise ValidationError(f"Longer than {self.max_length} characters.")
        if "\x00" in text:
            raise ValidationError("Contains a NUL character.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("Not valid Unicode.") from None
        return text


def money(**kwargs) -> fields.Decimal:
    bounded = validate.Range(min=-MAX_MONEY, max=MAX_MONEY, min_inclusive=False, max_inclusive=False)
    return _Decimal(allow_none=True, load_default=None, validate=bounded, **kwargs)


def count(**kwargs) -> fields.Integer:
    return _Integer(validate=validate.Range(min=-MAX_INT, max=MAX_INT), **kwargs)


def optional(field_class=Text, **kwargs):
    return field_class(allow_none=True, load_default=None, **kwargs)


class PayloadSchema(Schema):
    """Base: exclude unknown fields; load into `model`."""

    model: type = dict

    class Meta:
        unknown = EXCLUDE

    @post_load
    def _make(self, data, **_):
        return self.model(**data)
