# Principals, identity policies, key policies and grants from the command line.
KEY=$(ebsim kms create-key --query KeyMetadata.KeyId --output text)
t 'ebsim iam create-user --user-name alice --query User.[UserName,Arn] --output text'
t 'ebsim iam create-user --user-name alice'
t "ebsim --principal arn:aws:iam::111122223333:user/alice kms describe-key --key-id $KEY"
t "ebsim --principal arn:aws:iam::111122223333:user/mallory kms describe-key --key-id $KEY"
cat > use-keys.json <<'JSON'
{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "arn:aws:kms:*:111122223333:key/*"}}
JSON
t 'ebsim iam put-user-policy --user-name alice --policy-name use-keys --policy-document file://use-keys.json'
t 'ebsim iam put-user-policy --user-name alice --policy-name bad --policy-document "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:*\",\"Resource\":\"*\"}}"'
t 'ebsim iam list-user-policies --user-name alice --output text'
t 'ebsim configure set principal arn:aws:iam::111122223333:user/alice --profile alice'
t "ebsim --profile alice kms describe-key --key-id $KEY --query KeyMetadata.KeyState"
t "ebsim --profile alice kms disable-key --key-id $KEY"
t 'ebsim --profile alice kms create-key'
t 'ebsim --profile nobody kms list-keys'
# MalformedPolicyDocumentException: grammar, missing principals, lockout
t "ebsim kms put-key-policy --key-id $KEY --policy '{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"kms:*\",\"Resource\":\"*\"}]}'"
t "ebsim kms put-key-policy --key-id $KEY --policy '{\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/ghost\"},\"Action\":\"kms:*\",\"Resource\":\"*\"}]}'"
t "ebsim kms put-key-policy --key-id $KEY --policy '{\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/alice\"},\"Action\":\"kms:Encrypt\",\"Resource\":\"*\"}]}'"
t "ebsim kms put-key-policy --key-id $KEY --policy '{\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:*\",\"Resource\":\"*\",\"Condition\":{\"StringEqualz\":{\"kms:CallerAccount\":\"111122223333\"}}}]}'"
# An explicit deny in the key policy
cat > deny.json <<JSON
{"Version": "2012-10-17", "Statement": [
  {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
  {"Sid": "No decrypt for alice", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::111122223333:user/alice"}, "Action": "kms:Decrypt", "Resource": "*"}]}
JSON
t "ebsim kms put-key-policy --key-id $KEY --policy file://deny.json"
t "ebsim kms get-key-policy --key-id $KEY --query 'Policy' --output text | head -c 60; echo"
printf 'secret' > p.bin
ebsim --profile alice kms encrypt --key-id $KEY --plaintext fileb://p.bin --query CiphertextBlob --output text | base64 --decode > c.bin
t 'ebsim --profile alice kms decrypt --ciphertext-blob fileb://c.bin'
# Grants
ebsim iam create-user --user-name host >/dev/null
GRANT=$(ebsim kms create-grant --key-id $KEY --grantee-principal arn:aws:iam::111122223333:user/host --retiring-principal arn:aws:iam::111122223333:user/host --operations Decrypt GenerateDataKeyWithoutPlaintext --constraints 'EncryptionContextSubset={aws:ebs:id=vol-0abc}' --query GrantId --output text)
t "ebsim kms list-grants --key-id $KEY --query 'Grants[].[Operations,Constraints]'"
t "ebsim --principal arn:aws:iam::111122223333:user/host kms generate-data-key-without-plaintext --key-id $KEY --number-of-bytes 64 --encryption-context aws:ebs:id=vol-0abc --query KeyId --output text"
t "ebsim --principal arn:aws:iam::111122223333:user/host kms generate-data-key-without-plaintext --key-id $KEY --number-of-bytes 64 --encryption-context aws:ebs:id=vol-0def --query KeyId --output text"
t "ebsim kms create-grant --key-id $KEY --grantee-principal arn:aws:iam::111122223333:user/host --operations Sign"
t "ebsim --principal arn:aws:iam::111122223333:user/host kms retire-grant --key-id $KEY --grant-id $GRANT"
t "ebsim kms list-grants --key-id $KEY"
t "ebsim cloudtrail lookup-events --lookup-attributes AttributeKey=Username,AttributeValue=alice --query 'Events[].[EventName,Username]' --output text"
