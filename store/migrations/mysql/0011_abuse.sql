-- Issue 11. sessions.udp_id: a public id of the session token
-- (phonebook.UDPTokenID) that a UDP login names instead of sending the token;
-- sessions issued before this have none and log in over UDP after a new login.
ALTER TABLE sessions ADD COLUMN udp_id VARBINARY(16) NULL, ADD INDEX sessions_udp_id (udp_id)
;
-- A pending SMS code per (number, identity): another identity's start
-- cannot replace the code of the one that started first.
ALTER TABLE verify_codes DROP PRIMARY KEY, ADD PRIMARY KEY (number, device_id, sim_id)
