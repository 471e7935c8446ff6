# The seed notes' encrypt/decrypt lines, verbatim with `aws` replaced by `ebsim`.
echo "Attack at dawn. Bring the laser pointer." > battleplans.txt
t 'ebsim kms create-key --description "cat robot battle plans"'
KEY=$(ebsim kms list-keys --query 'Keys[0].KeyId' --output text)
t "ebsim kms create-alias --alias-name alias/catrobot --target-key-id $KEY"
t 'ebsim kms encrypt --key-id alias/catrobot --plaintext fileb://battleplans.txt --output text --query CiphertextBlob | base64 --decode > not_battleplans.enc'
t 'ebsim kms decrypt --ciphertext-blob fileb://not_battleplans.enc --output text --query Plaintext | base64 --decode > decryptedplans.txt'
t 'cmp battleplans.txt decryptedplans.txt && echo identical'
t 'grep -c "Attack at dawn" not_battleplans.enc'
t 'ebsim kms decrypt --ciphertext-blob fileb://not_battleplans.enc --query "[KeyId,EncryptionAlgorithm]" --output text'
t 'ebsim kms list-aliases --query "Aliases[?TargetKeyId!=null].[AliasName,TargetKeyId]" --output text'
t 'ls -l "$EBSIM_HOME/root.key" | cut -c1-10'
