-- Databases of the compose deployment: the exchange's audit log and the
-- four reference departments. Development credentials only.
CREATE USER tongban WITH PASSWORD 'tongban';
CREATE DATABASE audit OWNER tongban;
CREATE DATABASE police OWNER tongban;
CREATE DATABASE civil OWNER tongban;
CREATE DATABASE hrss OWNER tongban;
CREATE DATABASE market OWNER tongban;
CREATE DATABASE medins OWNER tongban;
