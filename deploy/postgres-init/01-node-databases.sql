-- Run once by the postgres image when its data volume is new (/docker-entrypoint-initdb.d):
-- a database of its own for each node that keeps its data in PostgreSQL (the hubs share the
-- database POSTGRES_DB makes, `overstap`). A node never shares a database with the hub or with
-- another node.
CREATE DATABASE node_gm0193 OWNER overstap;
