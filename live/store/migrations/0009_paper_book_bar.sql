-- Live store schema, version 9: the bar a paper order was sent in.
--
-- A market order fills at the open of a bar after the one it was decided on. A runner that
-- takes over redoes the bar its predecessor died in, and opens that bar again: an order the
-- predecessor had sent in it must wait for the next open, not fill at the one it was decided
-- after. NULL (orders from before this version, or sent before any bar opened) fills at the
-- next open, as before.
ALTER TABLE paper_book ADD COLUMN sent_in_bar_ns BIGINT;
